//! 64-bit constants used inside a loop, loaded once before it.
//!
//! An immediate that does not fit an instruction's 32-bit field costs an `ld_imm64` into the
//! scratch register each time it is used: in a scan that compares 8 bytes at every position
//! with a constant, one more instruction per position. Such operands of a loop's branches and
//! arithmetic become a value set in the loop's preheader (the one block outside the loop that
//! jumps to its header), held in a register through the loop. Runs last, after the passes that
//! would fold the constant back into its uses, and is kept only if the allocation then spills
//! no more than without it (`compile::loop_passes_if_free`): a register held through a busy
//! loop can push a value used on every path to the stack (ua_filter's scan: 18 more
//! instructions).

use crate::ir::{Block, Function, Inst, Operand, Terminator, Value, ValueKind};
use cranelift_entity::SecondaryMap;

fn wide(o: &Operand) -> Option<i64> {
    match *o {
        Operand::Imm(i) if i32::try_from(i).is_err() => Some(i),
        _ => None,
    }
}

/// Replaces the wide immediates of loop bodies by values set before the loop; true if any.
pub fn hoist_wide_constants(f: &mut Function) -> bool {
    let order = f.reverse_postorder();
    let preds = crate::facts::PredLists::new(f, &order);
    let mut loops = crate::prune_hints::loops(f, &order, &preds);
    // Outer loops first: their constants leave inner loops too.
    let size = |body: &SecondaryMap<Block, bool>| order.iter().filter(|&&b| body[b]).count();
    loops.sort_by_key(|(_, body)| std::cmp::Reverse(size(body)));
    let mut changed = false;
    for (header, body) in loops {
        let Some(pre) = crate::prune_hints::preheader(f, &preds, header, &body) else {
            continue;
        };
        let mut made: Vec<(i64, Value)> = Vec::new();
        let mut value_of = |f: &mut Function, i: i64| match made.iter().find(|(k, _)| *k == i) {
            Some(&(_, v)) => v,
            None => {
                let v = f.new_value(ValueKind::Scalar);
                made.push((i, v));
                v
            }
        };
        for &b in order.iter().filter(|&&b| body[b]) {
            for k in 0..f.blocks[b].insts.len() {
                if let Inst::Bin { b: o, .. } = &f.blocks[b].insts[k].0 {
                    if let Some(i) = wide(o) {
                        let v = value_of(f, i);
                        if let Inst::Bin { b: o, .. } = &mut f.blocks[b].insts[k].0 {
                            *o = Operand::Value(v);
                        }
                    }
                }
            }
            if let Terminator::Branch { b: o, .. } = &f.blocks[b].term.0 {
                if let Some(i) = wide(o) {
                    let v = value_of(f, i);
                    if let Terminator::Branch { b: o, .. } = &mut f.blocks[b].term.0 {
                        *o = Operand::Value(v);
                    }
                }
            }
        }
        let loc = f.blocks[pre].term.1;
        for (imm, dst) in made {
            f.blocks[pre].insts.push((Inst::Const { dst, imm }, loc));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use crate::compile::{asm_of, first_loop};

    /// A scan comparing 8 bytes with a 64-bit constant at each position: the constant is
    /// loaded once, before the loop, and the loop compares two registers.
    #[test]
    fn a_wide_constant_compared_in_a_loop_is_loaded_before_it() {
        let out = asm_of(
            r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  for i = 0, 63 do
    if i + 8 > len then break end
    if p:getint64(i) == 0x65696b6f6f430a0d then return 1 end
  end
  return 2
end, { name = "scan" })
"#,
        );
        let (lines, head, _) = first_loop(&out);
        let wide: Vec<i64> = lines
            .iter()
            .filter(|(_, l)| l.contains(" ll"))
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(wide.len(), 1, "one ld_imm64:\n{out}");
        assert!(wide[0] < head, "loaded before the loop (head at {head}):\n{out}");
    }
}
