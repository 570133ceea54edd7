//! rust-embed: drops TLS connections to blocked host names on one interface, with the filter
//! (examples/sni_filter.lua) compiled into this binary by build.rs.
//!
//! ```text
//! rust-embed INTERFACE [--block NAME]... [--seconds N] [--mode auto|native|skb]
//! ```
//!
//! It loads the filter, puts each `--block` name in its `blocklist` map, attaches it at XDP on
//! INTERFACE and runs until SIGINT or SIGTERM (or for N seconds), then prints how many packets
//! it dropped for each name and exits; the program detaches when the process ends.
#![deny(warnings)]

mod sni_filter {
    include!(concat!(env!("OUT_DIR"), "/sni_filter.rs"));
}

use std::process::ExitCode;
use std::time::Duration;

use luabpf_loader::skeleton::{chars_str, XdpMode};
use sni_filter::SniFilter;

struct Args {
    interface: String,
    blocked: Vec<String>,
    duration: Option<Duration>,
    mode: XdpMode,
}

const USAGE: &str = "usage: rust-embed INTERFACE [--block NAME]... [--seconds N] [--mode auto|native|skb]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut interface = None;
    let mut blocked = Vec::new();
    let mut duration = None;
    let mut mode = XdpMode::Auto;
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--block" => blocked.push(value("--block")?),
            "--seconds" => {
                let v = value("--seconds")?;
                let secs: u64 = v.parse().map_err(|_| format!("--seconds: `{v}` is not a number"))?;
                duration = Some(Duration::from_secs(secs));
            }
            "--mode" => {
                mode = match value("--mode")?.as_str() {
                    "auto" => XdpMode::Auto,
                    "native" => XdpMode::Native,
                    "skb" => XdpMode::Skb,
                    other => return Err(format!("--mode: `{other}` is not auto, native or skb")),
                }
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ if arg.starts_with('-') => return Err(format!("unknown option `{arg}`\n{USAGE}")),
            _ if interface.is_none() => interface = Some(arg),
            _ => return Err(format!("unexpected argument `{arg}`\n{USAGE}")),
        }
    }
    Ok(Args {
        interface: interface.ok_or_else(|| USAGE.to_string())?,
        blocked,
        duration,
        mode,
    })
}

/// Blocks SIGINT and SIGTERM in this thread (before any other starts) and waits for one of
/// them, or for `limit`: no handler runs, so there is nothing to get wrong about signal safety.
fn wait_for_signal(limit: Option<Duration>) -> Option<i32> {
    // SAFETY: plain libc calls on a local, initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let signal = match limit {
                Some(d) => {
                    let timeout = libc::timespec {
                        tv_sec: d.as_secs() as libc::time_t,
                        tv_nsec: d.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout)
                }
                None => libc::sigwaitinfo(&set, std::ptr::null_mut()),
            };
            if signal > 0 {
                return Some(signal);
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return None, // EAGAIN: the time is up
            }
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let filter = SniFilter::load()?;
    let blocklist = filter.blocklist()?;
    for name in &args.blocked {
        // The key is `c64` in the Lua file: a name longer than 64 bytes is refused here.
        blocklist.insert(name.as_str(), 0)?;
    }
    let link = filter.attach_xdp(&args.interface, args.mode)?;
    println!(
        "attached {} to {} (XDP, {} mode), blocking {} name(s)",
        link.program(),
        link.interface(),
        link.mode(),
        args.blocked.len()
    );
    let signal = wait_for_signal(args.duration);
    drop(link);
    match signal {
        Some(s) => println!("signal {s}: detached"),
        None => println!("time is up: detached"),
    }
    for key in blocklist.keys() {
        let key = key?;
        let hits = blocklist.get(key)?.unwrap_or(0);
        println!(
            "dropped {hits} packet(s) for {}",
            String::from_utf8_lossy(chars_str(&key))
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rust-embed: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rust-embed: {e}");
            ExitCode::FAILURE
        }
    }
}
