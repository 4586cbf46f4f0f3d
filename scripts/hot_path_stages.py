"""Where a server's CPU time per request goes, by stage of the guest hot path, from `perf` samples.

Used by `scripts/bench`: `record` samples a running server's call stacks (with inlined frames,
from the release build's line tables) while load runs, and `attribute` gives each sample to the
stage of the innermost user-space frame a rule knows. Multiplied by the CPU time per request
measured without `perf`, the shares become microseconds per request. A sample inside the kernel
counts for the stage whose system call it is in (a `writev` for the write, an `epoll_wait` for
the runtime), preemption at the system call's return included. The rules name functions, so they follow the code: a stage whose functions are
renamed falls into "other" until its rule is updated here.
"""

import collections
import os
import re
import shutil
import subprocess
import tempfile

# In the order printed. Each is (stage, rules); a rule is a function name (the last path segment
# of a frame, generics removed), optionally with the names one of which must be the next frame
# out ("name<parent1|parent2"), or a suffix of the full frame name ("*Type::name").
STAGES = [
    ("accept, read and parse", [
        "poll_read_head", "poll_read_from_io", "poll_read_keep_alive", "parse_headers", "*Http1Transaction>::parse",
        "*Buffered<T,B>::parse", "recv_msg", "__libc_recv", "accept", "poll_accept", "*TcpListener::accept",
    ]),
    ("caller lookup", ["with_caller", "for_peer", "instance_for"]),
    ("throttle", ["throttle_with", "throttle<respond", "counted", "count_connection", "admit", "limits"]),
    ("Host and browser checks", ["check_host_again", "check_host", "check_site", "host_allowed", "check<answer"]),
    ("token verification", ["check_token", "verify_bound", "unseal", "token_binding", "find_in"]),
    ("snapshot and path lookup", [
        "*MetadataTree::find", "find<route", "*metadata::path::parse", "parse<route", "*Segments as core::iter::traits::iterator::Iterator>::next",
        "current<route", "snapshot", "faults", "fault", "sees_events",
    ]),
    ("response headers", [
        "*Responder::data", "*Responder::response", "data<route", "response<route|issue_token|into_response|injected_status",
        "*Template::headers", "headers<data|response", "ttl_value", "into_response", "injected_status", "issue_token", "issue_bound",
        "unknown_caller",
    ]),
    ("metrics", [
        "guest_request", "*RouteClass::of", "of<answer_with|throttle_with", "version_with", "connection_opened",
        "connection_closed", "token_issued", "now<answer_with", "elapsed<answer_with",
    ]),
    ("write (encode and send)", [
        "*Http1Transaction>::encode", "write_head", "poll_flush", "poll_write_vectored", "__GI___writev", "writev",
        "__libc_send", "poll_flush_flattened",
        "encode_headers",
    ]),
    ("connection setup and close", [
        "serve_connection", "connect", "set_nodelay", "*HopLimitedStream::new", "watch", "spawn", "shutdown",
        "__close", "close",
    ]),
    ("runtime (scheduling, wakeups, epoll)", [
        "park", "park_internal", "park_timeout", "epoll_wait", "*Driver::turn", "run_task", "wake_by_val", "wake_by_ref",
        "schedule", "unpark", "notify_parked_local", "notify_parked_remote", "futex_wait", "syscall",
    ]),
    ("imds' own glue", ["answer", "*Reply as core::future::future::Future>::poll", "respond", "answer_with", "route"]),
    ("hyper's own glue", ["poll_catch", "poll_loop", "poll_write", "poll_read", "poll_msg", "*Dispatcher<D,Bs,I,T>::poll_inner"]),
]
OTHER = "other"


def _short(frame):
    """`a::b::C<T>::name<U> (inlined)` -> (`name`, `a::b::C::name`)."""
    frame = frame.replace(" (inlined)", "")
    out, depth = [], 0
    for ch in frame:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    full = "".join(out)
    return full.rsplit("::", 1)[-1], frame


def _rules():
    rules = []
    for stage, names in STAGES:
        for rule in names:
            if rule.startswith("*"):
                rules.append((stage, None, None, rule[1:]))
            else:
                name, _, parents = rule.partition("<")
                rules.append((stage, name, set(parents.split("|")) if parents else None, None))
    return rules


RULES = _rules()


def classify(frames):
    """The stage of one sample, from its user-space frames, innermost first."""
    shorts = [_short(f) for f in frames]
    for i, (name, full) in enumerate(shorts):
        parent = shorts[i + 1][0] if i + 1 < len(shorts) else None
        for stage, rule_name, parents, suffix in RULES:
            if suffix is not None:
                if suffix in full:
                    return stage
            elif name == rule_name and (parents is None or parent in parents):
                return stage
    return OTHER


def available():
    """Whether `perf` can sample here."""
    return shutil.which("perf") is not None


def record(pid, seconds, output):
    """Samples `pid`'s call stacks for `seconds` into `output`."""
    subprocess.run(
        ["perf", "record", "-q", "-F", "999", "-g", "--call-graph", "dwarf,8192", "-p", str(pid), "-o", output,
         "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def attribute(data):
    """Samples per stage in a `perf record` file (weighted by period)."""
    script = subprocess.run(["perf", "script", "-i", data, "-F", "tid,period,ip,sym"],
                            capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    period, frames = 0, []
    for line in script.splitlines() + [""]:
        if not line.strip():
            if period:
                counts[classify(frames)] += period
            period, frames = 0, []
        elif not line.startswith("\t"):
            fields = line.split()
            period = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 1
        else:
            address, _, symbol = line.strip().partition(" ")
            # Kernel frames are left to the user-space frame that entered the kernel.
            if not address.startswith("ffffffff"):
                frames.append(symbol)
    return counts


def profile(pid, seconds, load):
    """Stage shares of `pid` while `load()` (started here, returning a process) runs."""
    with tempfile.TemporaryDirectory(prefix="imds-bench-perf-") as directory:
        data = os.path.join(directory, "perf.data")
        running = load()
        try:
            record(pid, seconds, data)
        finally:
            running.wait()
        counts = attribute(data)
        if os.environ.get("KEEP_PERF"):
            shutil.copy(data, os.environ["KEEP_PERF"])
    total = sum(counts.values()) or 1
    return {stage: count / total for stage, count in counts.items()}


def names():
    """Every stage, in order, then "other"."""
    return [stage for stage, _ in STAGES] + [OTHER]


def self_test():
    """The rules on frames as `perf script` prints them."""
    examples = [
        (["sha2::sha256::x86::digest_blocks", "verify_bound (inlined)", "check_token (inlined)",
          "route<http_body_util::full::Full<bytes::Bytes>> (inlined)"], "token verification"),
        (["__memcmp_evex_movbe", "find<core::iter::Filter> (inlined)", "route<B> (inlined)"], "snapshot and path lookup"),
        (["hashbrown::raw::find", "find<(IpAddr, Arc<Slot>)> (inlined)", "get (inlined)", "with_caller<R> (inlined)"],
         "caller lookup"),
        (["__GI___writev", "poll_write_vectored (inlined)", "hyper::proto::h1::io::Buffered<T,B>::poll_flush"],
         "write (encode and send)"),
        # hyper's flattened write: a send, from inlined frames named as hyper's glue is.
        (["__libc_send (inlined)", "<std::sys::net::connection::socket::TcpStream>::write (inlined)",
          "write (inlined)", "poll_write (inlined)", "hyper::proto::h1::io::Buffered<T,B>::poll_flush"],
         "write (encode and send)"),
        # A runtime's wakeup writes to its eventfd.
        (["__GI___libc_write", "<std::sys::fd::unix::FileDesc>::write (inlined)", "wake (inlined)",
          "tokio::runtime::scheduler::multi_thread::park::Unparker::unpark"], "runtime (scheduling, wakeups, epoll)"),
        (["epoll_wait", "mio::poll::Poll::poll", "tokio::runtime::io::driver::Driver::turn"],
         "runtime (scheduling, wakeups, epoll)"),
        (["imds::metrics::RouteClass::of", "answer_with<B> (inlined)"], "metrics"),
        (["something_unknown"], OTHER),
    ]
    for frames, stage in examples:
        got = classify(frames)
        assert got == stage, (frames, got, stage)
    assert all(re.match(r"^[A-Za-z]", s) for s in names())


if __name__ == "__main__":
    self_test()
    print("ok")
