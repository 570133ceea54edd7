//! A verifier refusal in Lua terms: the verifier's reason, the instruction it failed on (its
//! index and luabpf's disassembly of it, map and helper names resolved), and the Lua file,
//! line and source text that instruction came from, rendered like every other diagnostic
//! (codespan).
//!
//! The instruction comes from the log (the last `N: (op) ...` line before the reason); its
//! Lua line from the object's own line info (`.BTF.ext`), read back from the ELF bytes that
//! were loaded, so this works for every path that loads (the CLI, tests, library users) and
//! for a `.o` on its own. The source text: the file at the path the line info records when it
//! still holds that line, else the line text the object's BTF carries; with neither, the
//! location is still named.

use runtime_bpf::object::Object;

/// How many trailing verifier-log lines the `Display` of a refusal shows (the whole log is in
/// [`VerifierError::log`], and `--verbose` prints it).
pub const LOG_TAIL_LINES: usize = 12;

/// A program the verifier (or `BPF_PROG_LOAD`) refused.
#[derive(Debug)]
pub struct VerifierError {
    /// The program (ELF symbol) name.
    pub program: String,
    /// The errno `BPF_PROG_LOAD` returned (`EACCES` for most verifier refusals, `E2BIG` when
    /// the program is too complex, `EINVAL` for malformed code).
    pub errno: Option<i32>,
    /// `EACCES (Permission denied)`.
    pub errno_text: String,
    /// The verifier's whole log (level 1 + stats): the path that failed and the reason on
    /// its last lines. May be empty if the kernel refused the program before verifying it.
    pub log: String,
    /// Where in the program (and in the Lua source) the verifier stopped, when the log names
    /// an instruction.
    pub failed_at: Option<FailedAt>,
}

/// The instruction the verifier refused, and the Lua source it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedAt {
    /// Its index in the program (what the log and `luabpf disasm` number it).
    pub insn: usize,
    /// Its disassembly, with map and helper names (the log's own text when the object could
    /// not be read).
    pub asm: String,
    /// The Lua line it came from, when the object has line info for it.
    pub source: Option<SourceLine>,
}

/// A line of Lua source named by the object's line info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLine {
    /// The file name as the compiler recorded it.
    pub file: String,
    /// 1-based line and column.
    pub line: u32,
    pub col: u32,
    /// The line's text, when known (from the file, or the object's BTF).
    pub text: Option<String>,
}

impl VerifierError {
    /// A refusal of `program` from `BPF_PROG_LOAD`'s error and log; [`Self::locate`] adds
    /// where it failed.
    pub fn new(program: &str, error: &std::io::Error, log: String) -> VerifierError {
        VerifierError {
            program: program.to_string(),
            errno: error.raw_os_error(),
            errno_text: crate::sys::errno_text(error),
            log,
            failed_at: None,
        }
    }

    /// Finds the failing instruction in the log and its Lua line in the object `elf` (the
    /// bytes that were loaded).
    pub fn locate(mut self, elf: &[u8]) -> VerifierError {
        let object = runtime_bpf::elf::read(elf).ok();
        self.failed_at = failed_at(&self.log, &self.program, object.as_ref());
        self
    }

    /// The verifier's reason: the last non-empty log line that is not a statistics line.
    pub fn reason(&self) -> Option<&str> {
        reason(&self.log)
    }

    /// The refusal for people: the reason, the instruction, the Lua source (codespan), a hint,
    /// then the end of the log, or all of it with `full_log`.
    pub fn render(&self, full_log: bool) -> String {
        let mut out = format!("the kernel refused program `{}`: {}", self.program, self.errno_text);
        if let Some(reason) = self.reason() {
            out.push_str(": ");
            out.push_str(reason);
        }
        out.push('\n');
        if let Some(at) = &self.failed_at {
            out.push_str(&self.render_location(at));
        }
        let lines: Vec<&str> = self.log.lines().collect();
        if lines.is_empty() {
            out.push_str("(the verifier wrote no log)");
            return out;
        }
        let skip = if full_log {
            0
        } else {
            lines.len().saturating_sub(LOG_TAIL_LINES)
        };
        out.push_str("verifier log");
        if skip > 0 {
            out.push_str(&format!(
                " (last {} of {} lines; --verbose prints them all)",
                lines.len() - skip,
                lines.len()
            ));
        }
        out.push(':');
        for l in &lines[skip..] {
            out.push_str("\n  ");
            out.push_str(l);
        }
        out
    }

    /// The failing instruction against its Lua line, as a codespan diagnostic; without source
    /// text, a plain `--> file:line:col` line.
    fn render_location(&self, at: &FailedAt) -> String {
        let what = format!("instruction {}: {}", at.insn, at.asm);
        let message = format!(
            "the verifier stopped here: {}",
            self.reason().unwrap_or("it refused this instruction")
        );
        let Some(src) = &at.source else {
            return format!("  at {what} (the object has no line info for it)\n");
        };
        let Some(text) = &src.text else {
            return format!("  --> {}:{}:{}\n  = {what}\n", src.file, src.line, src.col);
        };
        // A one-file database holding just enough lines that `line` is where it belongs.
        let mut file_text = "\n".repeat(src.line.saturating_sub(1) as usize);
        let line_start = file_text.len();
        file_text.push_str(text);
        file_text.push('\n');
        let col = (src.col.max(1) as usize - 1).min(text.len());
        let col = (0..=col).rev().find(|&c| text.is_char_boundary(c)).unwrap_or(0);
        let start = line_start + col.min(text.trim_end().len());
        let end = (line_start + text.trim_end().len()).max(start);
        render_one(&src.file, file_text, start..end, &message, &what, &hint(&self.log))
    }
}

/// One codespan error with a primary label and a help note, as `luabpf check` prints its
/// diagnostics (codespan-reporting directly: the library does not depend on the compiler).
fn render_one(
    file: &str,
    text: String,
    span: std::ops::Range<usize>,
    message: &str,
    label: &str,
    help: &str,
) -> String {
    use codespan_reporting::diagnostic::{Diagnostic, Label};
    use codespan_reporting::files::SimpleFile;
    use codespan_reporting::term::{self, termcolor::Buffer};

    let file = SimpleFile::new(file, text);
    let d = Diagnostic::error()
        .with_message(message)
        .with_labels(vec![Label::primary((), span).with_message(label)])
        .with_notes(vec![format!("help: {help}")]);
    let mut buf = Buffer::no_color();
    if term::emit(&mut buf, &term::Config::default(), &file, &d).is_err() {
        return format!("error: {message}\n");
    }
    String::from_utf8_lossy(buf.as_slice()).into_owned()
}

impl std::fmt::Display for VerifierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render(false).trim_end())
    }
}

/// The verifier's message when it gives up: the kernel appends it to the instruction line
/// it stopped at, without a line break.
const TOO_LARGE: &str = "BPF program is too large";

/// The last non-empty log line that is not a statistics line.
pub fn reason(log: &str) -> Option<&str> {
    let line = log.lines().rev().map(str::trim).find(|l| {
        !l.is_empty()
            && !l.starts_with("processed ")
            && !l.starts_with("verification time")
            && !l.starts_with("stack depth")
            && !l.starts_with("-- END PROG LOAD LOG --")
    })?;
    Some(line.find(TOO_LARGE).map_or(line, |i| &line[i..]))
}

/// The last instruction the log shows before its reason: `(index, the log's text of it)`.
/// Instruction lines read `12: (61) r2 = *(u32 *)(r1 +4)`, possibly followed by `; R2_w=...`.
pub fn failing_insn(log: &str) -> Option<(usize, String)> {
    log.lines().rev().find_map(|l| {
        let (idx, rest) = l.split_once(": (")?;
        let idx: usize = idx.trim().parse().ok()?;
        let (_opcode, text) = rest.split_once(") ")?;
        let text = text.split("  ; ").next().unwrap_or(text);
        let text = text.split(TOO_LARGE).next().unwrap_or(text).trim();
        Some((idx, text.to_string()))
    })
}

/// Where the verifier stopped in `program`, in the object when there is one.
pub fn failed_at(log: &str, program: &str, object: Option<&Object>) -> Option<FailedAt> {
    let (insn, log_text) = failing_insn(log)?;
    let Some(object) = object else {
        return Some(FailedAt {
            insn,
            asm: log_text,
            source: None,
        });
    };
    let Some(code) = object.programs.iter().find(|p| p.name == program) else {
        return Some(FailedAt {
            insn,
            asm: log_text,
            source: None,
        });
    };
    let names = runtime_bpf::disasm::program_names(code, &object.maps);
    let asm = runtime_bpf::disasm::listing(&code.insns, &names)
        .into_iter()
        .find(|l| l.slot == insn)
        .map(|l| l.text)
        .unwrap_or(log_text);
    let source = code.locs.get(insn).filter(|loc| loc.line != 0).and_then(|loc| {
        let file = object.sources.get(loc.file as usize)?;
        let btf_text = file
            .text
            .lines()
            .nth(loc.line as usize - 1)
            .filter(|t| !t.trim().is_empty());
        Some(SourceLine {
            file: file.name.clone(),
            line: loc.line,
            col: loc.col,
            text: line_text(&file.name, loc.line, btf_text),
        })
    });
    Some(FailedAt { insn, asm, source })
}

/// The text of `line` of `file`: from the file on disk when it still has the line the object
/// recorded (or the object recorded none), else the object's copy.
fn line_text(file: &str, line: u32, recorded: Option<&str>) -> Option<String> {
    let on_disk = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.lines().nth(line as usize - 1).map(str::to_string));
    match (on_disk, recorded) {
        (Some(d), Some(r)) if d.trim() == r.trim() => Some(d),
        (Some(d), None) => Some(d),
        (_, Some(r)) => Some(r.to_string()),
        (None, None) => None,
    }
}

/// What a refusal means for a luabpf program, by the verifier's last words (the reason and
/// the lines just before it: "invalid access to packet" precedes "R1 offset is outside ...").
fn hint(log: &str) -> String {
    let lines: Vec<&str> = log.lines().rev().take(6).collect();
    let reason = lines.join("\n");
    let bug = "`luabpf check` accepted this program, so this refusal is a bug in luabpf: please report it with the program file";
    let what = if reason.contains("invalid access to packet") {
        "the packet was read or written without a bounds check the verifier could follow"
    } else if reason.contains("or_null") {
        "a value that may be nil (a map lookup's result) was used before its nil test"
    } else if reason.contains("infinite loop") || reason.contains("back-edge") {
        "the verifier could not see this loop end"
    } else if reason.contains("too large") || reason.contains("too complex") {
        "the verifier ran out of budget exploring this program's paths"
    } else if reason.contains("stack") {
        "a stack buffer was accessed out of its bounds, or the stack grew past 512 bytes"
    } else {
        return bug.to_string();
    };
    format!("{what}; {bug}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(log: &str) -> VerifierError {
        VerifierError {
            program: "p".into(),
            errno: Some(libc::EACCES),
            errno_text: "EACCES (Permission denied)".into(),
            log: log.into(),
            failed_at: None,
        }
    }

    #[test]
    fn reason_skips_stats() {
        let v = refusal("0: R1=ctx() R10=fp0\n0: (bf) r0 = r2\nR2 !read_ok\nprocessed 1 insns (limit 1000000)\n");
        assert_eq!(v.reason(), Some("R2 !read_ok"));
        let shown = v.to_string();
        assert!(shown.starts_with("the kernel refused program `p`: EACCES (Permission denied): R2 !read_ok"));
        assert!(shown.contains("\n  0: (bf) r0 = r2"));
    }

    #[test]
    fn long_logs_show_their_tail_unless_verbose() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let v = refusal(&log);
        let shown = v.to_string();
        assert!(shown.contains("last 12 of 100 lines; --verbose prints them all"));
        assert!(shown.contains("line 99") && !shown.contains("line 87\n"));
        let full = v.render(true);
        assert!(full.contains("\n  line 0\n") && full.contains("line 99"));
    }

    #[test]
    fn the_failing_instruction_is_the_last_one_logged() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n0: (61) r2 = *(u32 *)(r1 +0)  ; R1=ctx() R2_w=pkt()\n\
                   ; local x = p:getbyte(20) @ prog.lua:5\n7: (71) r0 = *(u8 *)(r2 +20)\n\
                   invalid access to packet, off=20 size=1, R2(id=0,off=20,r=0)\n\
                   R2 offset is outside of the packet\nprocessed 8 insns (limit 1000000)\n";
        assert_eq!(failing_insn(log), Some((7, "r0 = *(u8 *)(r2 +20)".to_string())));
        assert_eq!(reason(log), Some("R2 offset is outside of the packet"));
        assert_eq!(failing_insn("BPF program is too large\n"), None);
        // At the budget, the kernel writes the message on the instruction's line.
        let log = "368: (2d) if r2 > r0 goto pc+897 BPF program is too large. Processed 1000001 insn\n\
                   processed 1000001 insns (limit 1000000)\n";
        assert_eq!(failing_insn(log), Some((368, "if r2 > r0 goto pc+897".to_string())));
        assert_eq!(reason(log), Some("BPF program is too large. Processed 1000001 insn"));
    }

    #[test]
    fn without_an_object_the_log_text_stands_in() {
        let at = failed_at("3: (85) call bpf_map_lookup_elem#1\nR1 type=scalar\n", "p", None).expect("found");
        assert_eq!(at.insn, 3);
        assert_eq!(at.asm, "call bpf_map_lookup_elem#1");
        assert_eq!(at.source, None);
        let v = VerifierError {
            failed_at: Some(at),
            ..refusal("3: (85) call bpf_map_lookup_elem#1\nR1 type=scalar\n")
        };
        assert!(v
            .to_string()
            .contains("at instruction 3: call bpf_map_lookup_elem#1 (the object has no line info"));
    }

    #[test]
    fn a_recorded_line_wins_over_a_changed_file() {
        // No such file: the object's copy of the line is used.
        assert_eq!(
            line_text("/nonexistent/prog.lua", 3, Some("  local x = 1")),
            Some("  local x = 1".to_string())
        );
        assert_eq!(line_text("/nonexistent/prog.lua", 3, None), None);
    }
}
