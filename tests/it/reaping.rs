//! No descendant of an `exec` command outlives its instance: not one that leaves the
//! command's process group (`setsid`), not when `pipe` is killed with `kill -9`, and no retry
//! starts after SIGTERM. Each command writes the pids this test checks into files.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

/// Runs `pipe ARGS` under `timeout 30`; a hang shows as exit code 124.
fn pipe_t(p: &Project, args: &[&str]) -> Output {
    let mut c = std::process::Command::new("timeout");
    c.arg("30")
        .arg(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(p.dir.path())
        .env("PIPE_CACHE", p.cache());
    c.output().unwrap()
}

/// Writes `pipeline` as `p.toml`, runs it (it must succeed) and returns its one artifact's
/// folder.
fn run_one(p: &Project, pipeline: &str) -> std::path::PathBuf {
    p.write("p.toml", pipeline);
    let out = pipe_t(p, &["run", "p.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.artifacts().remove(0)
}

/// Whether process `pid` is gone (a zombie nobody reaped counts as gone: it runs nothing).
fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, None | Some("Z"))
}

/// Whether every pid is gone within `within` (signals are delivered asynchronously).
fn all_gone(pids: &[u32], within: Duration) -> bool {
    let t = Instant::now();
    while !pids.iter().all(|p| gone(*p)) {
        if t.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The pids in `file`, one a line, once it has `n` of them (waits up to 10 s).
fn pids_in(file: &Path, n: usize) -> Vec<u32> {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() >= n || t.elapsed() > Duration::from_secs(10) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills processes a failed test left behind, so that they do not outlive the test run.
fn kill_all(pids: &[u32]) {
    for p in pids {
        // SAFETY: kill(2); a pid that is gone or reused by a process we may not signal
        // gives an error, which is ignored.
        unsafe {
            libc::kill(*p as i32, libc::SIGKILL);
        }
    }
}

#[test]
fn a_setsid_grandchild_is_killed_before_the_artifact_is_sealed() {
    let p = Project::new();
    // The grandchild leaves the command's group and session, opens an output file, and
    // would write into it (and a marker beside the pipeline) 1.5 s later. The command waits
    // until it has started. (`$$$$` is the shell's `$$`.)
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "grandchild"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "setsid sh -c 'exec 3>>$PIPE_OUT/x.txt; echo $$$$ > gc.pid; sleep 1.5; echo late >&3; echo late > marker' & echo on-time > $PIPE_OUT/x.txt; while [ ! -s gc.pid ]; do sleep 0.05; done"]
"#,
    );
    let out = pipe_t(&p, &["run", "p.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grandchild = pids_in(&p.path("gc.pid"), 1);
    assert_eq!(grandchild.len(), 1, "the grandchild started");
    std::thread::sleep(Duration::from_secs(3));
    let alive = !gone(grandchild[0]);
    kill_all(&grandchild);
    assert!(!alive, "the setsid grandchild outlived its instance");
    assert!(!p.path("marker").exists(), "the grandchild ran on");
    let dir = &p.artifacts()[0];
    assert_eq!(
        std::fs::read_to_string(dir.join("x.txt")).unwrap(),
        "on-time\n"
    );
    let verify = pipe_t(&p, &["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn kill_9_of_pipe_kills_a_setsid_grandchild() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "kill9"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "setsid sh -c 'echo $$$$ > gc.pid; exec sleep 30' & echo $$$$ > cmd.pid; exec sleep 30"]
"#,
    );
    let mut run = p.command(&["run", "p.toml", "-q"]).spawn().unwrap();
    let mut pids = pids_in(&p.path("gc.pid"), 1);
    pids.extend(pids_in(&p.path("cmd.pid"), 1));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGKILL);
    }
    let _ = run.wait();
    assert_eq!(pids.len(), 2, "the command and its grandchild started");
    let ok = all_gone(&pids, Duration::from_secs(2));
    kill_all(&pids);
    assert!(
        ok,
        "the command or its setsid grandchild outlived `kill -9` of pipe"
    );
}

#[test]
fn sigterm_starts_no_retry_and_leaves_no_sleep() {
    let p = Project::new();
    // Each attempt records the pid of the sleep it starts.
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "retry"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "sleep 30 & echo $$! >> sleepers; wait"]
retries = 2
"#,
    );
    let mut run = p.command(&["run", "p.toml", "-q"]).spawn().unwrap();
    assert_eq!(
        pids_in(&p.path("sleepers"), 1).len(),
        1,
        "the first attempt"
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGTERM);
    }
    let status = run.wait().unwrap();
    // A retry started after the signal would have written its sleep's pid by now.
    std::thread::sleep(Duration::from_secs(1));
    let sleepers = pids_in(&p.path("sleepers"), 1);
    let ok = all_gone(&sleepers, Duration::from_secs(2));
    kill_all(&sleepers);
    assert_eq!(status.code(), Some(130));
    assert_eq!(sleepers.len(), 1, "a retry started after SIGTERM");
    assert!(ok, "a sleep outlived pipe");
    let logs: Vec<_> = std::fs::read_dir(p.cache().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(logs.len(), 1);
    assert!(
        !logs[0].contains("attempt 2") && !logs[0].contains("retrying"),
        "{}",
        logs[0]
    );
}

#[test]
fn a_command_reads_nothing_on_stdin_and_cannot_reach_the_status_channel() {
    // The reaper's own stdin carries its report to pipe; the command must get /dev/null
    // there, so that reading gives end of file at once and a write reaches nothing.
    let p = Project::new();
    let dir = run_one(
        &p,
        r#"
[pipeline]
name = "stdin"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "readlink /proc/self/fd/0 > $PIPE_OUT/stdin.txt; cat > $PIPE_OUT/read.txt; echo 'status 7' >&0 2>/dev/null; ls /proc/self/fd > $PIPE_OUT/fds.txt"]
"#,
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(read("stdin.txt"), "/dev/null\n");
    assert_eq!(read("read.txt"), "");
    // The command holds the descriptors a shell started by this test holds (what the test
    // harness passes down), and no other: nothing of pipe's or the reaper's leaked.
    let direct = std::process::Command::new("sh")
        .args(["-c", "ls /proc/self/fd"])
        .output()
        .unwrap();
    assert_eq!(read("fds.txt"), String::from_utf8_lossy(&direct.stdout));
}

#[test]
fn a_command_starts_with_no_signal_blocked_or_ignored() {
    // The supervisor blocks the signals it waits for and ignores SIGPIPE (as Rust programs
    // do); glibc's `posix_spawn` leaves its two internal signals ignored in what it starts.
    // None of that may reach the command: `yes | head` must end by SIGPIPE, quietly.
    let p = Project::new();
    let dir = run_one(
        &p,
        r#"
[pipeline]
name = "signals"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status > $PIPE_OUT/sig.txt; yes | head -c 4 > $PIPE_OUT/yes.txt"]
"#,
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    // What a shell this test starts itself shows (the test harness starts nothing with a
    // signal ignored or blocked).
    assert_eq!(
        read("sig.txt"),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    assert_eq!(read("yes.txt"), "y\ny\n");
    let logs: Vec<_> = std::fs::read_dir(p.cache().join("logs")).unwrap().collect();
    let log = std::fs::read_to_string(logs[0].as_ref().unwrap().path()).unwrap();
    assert!(!log.contains("Broken pipe"), "{log}");
}

#[test]
fn the_program_is_found_as_execvp_finds_it_and_a_start_failure_names_it() {
    // The supervisor looks the program up itself (on the PATH of the command's own
    // environment), runs a script without `#!` with /bin/sh, and reports why a program
    // could not start.
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    let mode = |name: &str, mode: u32| {
        std::fs::set_permissions(
            p.dir.path().join(name),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap()
    };
    p.write("plain.sh", "echo plain > \"$PIPE_OUT/p.txt\"\n");
    mode("plain.sh", 0o755);
    p.write("noexec.sh", "#!/bin/sh\necho never\n");
    mode("noexec.sh", 0o644);
    std::fs::create_dir(p.dir.path().join("bin")).unwrap();
    p.write("bin/tool", "#!/bin/sh\necho \"$1\" > \"$PIPE_OUT/t.txt\"\n");
    mode("bin/tool", 0o755);
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "lookup"
[stage.missing]
kind = "exec"
cmd = ["no-such-program-here"]
[stage.noexec]
kind = "exec"
cmd = ["./noexec.sh"]
[stage.plain]
kind = "exec"
cmd = ["./plain.sh"]
[stage.onpath]
kind = "exec"
cmd = ["tool", "found"]
env = { PATH = "bin:/usr/bin:/bin" }
"#,
    );
    let out = pipe_t(&p, &["run", "p.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "cannot start `no-such-program-here` (in .): No such file or directory (os error 2)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot start `./noexec.sh` (in .): Permission denied (os error 13)"),
        "{stderr}"
    );
    let mut made: Vec<String> = p
        .artifacts()
        .iter()
        .flat_map(|a| std::fs::read_dir(a).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "txt"))
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    made.sort();
    assert_eq!(made, vec!["found\n".to_string(), "plain\n".to_string()]);
}

#[test]
fn a_command_longer_than_one_message_runs_whole() {
    // A request over 48 KiB travels to the supervisor in a memfd instead of the message.
    let p = Project::new();
    let long = "x".repeat(100_000);
    let dir = run_one(
        &p,
        &format!(
            r#"
[pipeline]
name = "long"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "printf %s \"$1\" | wc -c > $PIPE_OUT/n.txt; printf %s \"$BIG\" | wc -c >> $PIPE_OUT/n.txt", "_", "{long}"]
env = {{ BIG = "{long}" }}
"#
        ),
    );
    let n = std::fs::read_to_string(dir.join("n.txt")).unwrap();
    assert_eq!(
        n.split_whitespace().collect::<Vec<_>>(),
        ["100000", "100000"]
    );
}

#[test]
fn a_command_stopped_at_its_timeout_leaves_the_next_ones_alone() {
    // Supervisors run command after command: the stop of one (at its timeout) must reach
    // that command only, never one that starts after it.
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "stops"
[sweep]
i = [1, 2, 3, 4]
[stage.slow]
kind = "exec"
cmd = ["sleep", "3${i}"]
timeout = "1s"
[stage.after]
kind = "exec"
cmd = ["sh", "-c", "sleep 0.3; echo ${i} > $PIPE_OUT/ok.txt"]
"#,
    );
    let clock = Instant::now();
    let out = pipe_t(&p, &["run", "p.toml", "--jobs", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let timed_out = stderr
        .lines()
        .filter(|l| l.contains("FAILED slow[i=") && l.contains("timed out: still running after 1s"))
        .count();
    assert_eq!(timed_out, 4, "{stderr}");
    let mut ok: Vec<String> = p
        .artifacts()
        .iter()
        .filter_map(|a| std::fs::read_to_string(a.join("ok.txt")).ok())
        .collect();
    ok.sort();
    assert_eq!(ok, ["1\n", "2\n", "3\n", "4\n"]);
    assert!(
        clock.elapsed() < Duration::from_secs(20),
        "the timeouts stopped them"
    );
}

#[test]
fn no_process_of_the_supervision_is_left_when_pipe_returns() {
    // The server and its supervisors are reaped before `pipe` exits: not left running, nor
    // as zombies for init to reap.
    let p = Project::new();
    let dir = run_one(
        &p,
        r#"
[pipeline]
name = "left"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "echo $PPID > $PIPE_OUT/supervisor.txt; cut -d' ' -f4 /proc/$PPID/stat > $PIPE_OUT/server.txt"]
"#,
    );
    for file in ["supervisor.txt", "server.txt"] {
        let pid = std::fs::read_to_string(dir.join(file)).unwrap();
        let pid: u32 = pid.trim().parse().unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{file}: process {pid} is left"
        );
    }
}
