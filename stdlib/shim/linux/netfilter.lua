-- linux.netfilter: netfilter verdicts (NF_DROP, NF_ACCEPT).
return { DROP = 0, ACCEPT = 1 }
