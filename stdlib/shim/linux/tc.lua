-- linux.tc: tc verdicts (include/uapi/linux/pkt_cls.h, TC_ACT_*).
return {
  ACT_UNSPEC = -1, ACT_OK = 0, ACT_RECLASSIFY = 1, ACT_SHOT = 2, ACT_PIPE = 3,
  ACT_STOLEN = 4, ACT_QUEUED = 5, ACT_REPEAT = 6, ACT_REDIRECT = 7,
}
