//! The least CPU a receiver can spend per delivery on this machine: `N` STOMP-over-WebSocket
//! subscribers of one room, read by one thread with epoll, doing nothing with what arrives
//! but counting the WebSocket frames (one per MESSAGE from a broadcaster that sends no
//! pings and does not fragment, as rawstomp does not). A virtual user does far more per delivery (decode,
//! stamp, integrity, histograms), so what this reader costs a delivery is a floor under
//! the harness's own figure (`harness` in the cost line) for the same traffic.
//!
//! Point it at the bare broadcaster in `../shared/tools/rawstomp`, which routes a SEND to
//! `/app/chat/{room}` to the subscribers of `/topic/room/{room}`:
//!
//! ```text
//! rawstomp --listen 127.0.0.1:18090 &
//! cargo run --release --example receive_floor -- 127.0.0.1:18090 2000 25 30
//! ```
//!
//! Arguments: the broadcaster's address, subscribers, messages per second (sent by a
//! thread of its own on one more connection; 256-byte bodies), seconds measured (after
//! 3 s of warm-up). The figure printed is deliveries per CPU-second of the reading thread
//! alone (`CLOCK_THREAD_CPUTIME_ID`), the sender's CPU left out.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Most events taken from the kernel per `epoll_wait`.
const EVENTS: usize = 1024;

/// Largest WebSocket frame accepted (the broadcaster's frames are a few hundred bytes).
const MAX_FRAME: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| {
        let [addr, n, rate, secs] = args.as_slice() else {
            return None;
        };
        Some((
            addr.clone(),
            n.parse::<usize>().ok().filter(|n| *n > 0)?,
            rate.parse::<f64>().ok().filter(|r| *r > 0.0)?,
            secs.parse::<u64>().ok().filter(|s| *s > 0)?,
        ))
    })();
    let Some((addr, n, rate, secs)) = parsed else {
        eprintln!("usage: receive_floor HOST:PORT SUBSCRIBERS MSG_PER_S SECONDS");
        eprintln!("  e.g. receive_floor 127.0.0.1:18090 2000 25 30 (against rawstomp)");
        std::process::exit(2);
    };
    if let Err(e) = run(&addr, n, rate, secs) {
        eprintln!("receive_floor: {e}");
        std::process::exit(1);
    }
}

fn run(addr: &str, n: usize, rate: f64, secs: u64) -> std::io::Result<()> {
    // SAFETY: plain system calls on descriptors this function owns.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns; closed when this returns.
    let epoll_fd = unsafe { OwnedFd::from_raw_fd(epoll) };
    let epoll = epoll_fd.as_raw_fd();
    let mut subscribers = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = open(addr)?;
        s.write_all(&ws_frame(
            b"SUBSCRIBE\nid:0\ndestination:/topic/room/hall\nreceipt:r\n\n\0",
        ))?;
        expect_frame(&mut s, b"RECEIPT")?;
        s.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` outlives the call; the descriptor stays open in `subscribers`.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        subscribers.push(Subscriber {
            stream: s,
            partial: Vec::new(),
        });
    }
    eprintln!("{n} subscribers ready; sending {rate} msg/s");
    let mut sender = open(addr)?;
    let body = format!("{{\"text\":\"{}\"}}", "x".repeat(244));
    let send = ws_frame(
        format!("SEND\ndestination:/app/chat/hall\ncontent-type:application/json\n\n{body}\0")
            .as_bytes(),
    );
    let end = Instant::now() + Duration::from_secs(secs + 4);
    std::thread::spawn(move || {
        let gap = Duration::from_secs_f64(1.0 / rate);
        let mut next = Instant::now();
        while Instant::now() < end {
            if let Err(e) = sender.write_all(&send) {
                eprintln!("receive_floor: the sender stopped: {e}");
                return;
            }
            next += gap;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });

    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut buf = vec![0u8; 64 * 1024];
    let mut delivered = 0u64;
    let warm = Instant::now() + Duration::from_secs(3);
    let mut start: Option<(Instant, f64, u64)> = None;
    loop {
        // SAFETY: `events` has room for EVENTS entries.
        let ready = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS as i32, 100) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..ready as usize] {
            let sub = &mut subscribers[ev.u64 as usize];
            loop {
                match sub.stream.read(&mut buf) {
                    Ok(0) => return Err(std::io::Error::other("a subscriber was disconnected")),
                    Ok(k) => {
                        delivered += sub.count(&buf[..k])?;
                        // Less than asked for: the socket is drained (edge-triggered,
                        // new data makes a new event).
                        if k < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let now = Instant::now();
        match start {
            None if now >= warm => start = Some((now, thread_cpu_s(), delivered)),
            Some((t0, _, _)) if now >= t0 + Duration::from_secs(secs) => break,
            _ => {}
        }
    }
    let (t0, cpu0, d0) = start.expect("set before the loop ends");
    let (wall, cpu, d) = (
        t0.elapsed().as_secs_f64(),
        thread_cpu_s() - cpu0,
        delivered - d0,
    );
    if d == 0 || cpu <= 0.0 {
        return Err(std::io::Error::other(format!(
            "nothing was delivered in {wall:.1} s: does {addr} route /app/chat/hall to /topic/room/hall?"
        )));
    }
    println!(
        "{d} deliveries in {wall:.1} s ({:.0}/s); reading thread {cpu:.2} CPU-s: {:.0} deliveries per CPU-s, {:.2} µs each",
        d as f64 / wall,
        d as f64 / cpu,
        cpu * 1e6 / d as f64
    );
    Ok(())
}

struct Subscriber {
    stream: TcpStream,
    /// The start of a WebSocket frame that a read cut short.
    partial: Vec<u8>,
}

impl Subscriber {
    /// Counts the whole WebSocket frames that `data` completes.
    fn count(&mut self, data: &[u8]) -> std::io::Result<u64> {
        let joined;
        let mut rest = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(data);
            joined = std::mem::take(&mut self.partial);
            &joined[..]
        };
        let mut frames = 0;
        while let Some(len) = frame_len(rest)? {
            frames += 1;
            rest = &rest[len..];
        }
        self.partial = rest.to_vec();
        Ok(frames)
    }
}

/// The length of the unmasked (server-to-client) WebSocket frame at the start of `b`:
/// `Ok(None)` until all of it is there, an error for one over [`MAX_FRAME`].
fn frame_len(b: &[u8]) -> std::io::Result<Option<usize>> {
    let header = || -> Option<(usize, u64)> {
        Some(match *b.get(1)? & 0x7f {
            126 => (4, u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
            127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)),
            short => (2, u64::from(short)),
        })
    };
    let Some((head, payload)) = header() else {
        return Ok(None);
    };
    if payload > MAX_FRAME as u64 {
        return Err(std::io::Error::other(format!(
            "a {payload}-byte WebSocket frame (at most {MAX_FRAME} expected)"
        )));
    }
    let len = head + payload as usize;
    Ok((b.len() >= len).then_some(len))
}

/// A connection with its WebSocket upgrade and STOMP CONNECT done.
fn open(addr: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET /ws-stomp HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n\r\n"
    )?;
    let response = read_until(&mut s, b"\r\n\r\n")?;
    if !response.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(format!(
            "{addr} refused the WebSocket upgrade: {}",
            String::from_utf8_lossy(response.split(|b| *b == b'\r').next().unwrap_or(&[]))
        )));
    }
    s.write_all(&ws_frame(
        b"CONNECT\naccept-version:1.2\nhost:floor\nheart-beat:0,0\n\n\0",
    ))?;
    expect_frame(&mut s, b"CONNECTED")?;
    Ok(s)
}

/// Reads the HTTP response to the upgrade (blocking, a byte at a time: set-up only).
fn read_until(s: &mut TcpStream, needle: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(needle) {
        s.read_exact(&mut byte)?;
        got.push(byte[0]);
    }
    Ok(got)
}

/// Reads WebSocket frames (blocking: set-up only) until one whose STOMP command is
/// `command`; an ERROR ends the run.
fn expect_frame(s: &mut TcpStream, command: &[u8]) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head)?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l)?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l)?;
                u64::from_be_bytes(l) as usize
            }
            short => short as usize,
        };
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "a {len}-byte frame during set-up (at most {MAX_FRAME} expected)"
            )));
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)?;
        if payload.starts_with(command) {
            return Ok(());
        }
        if payload.starts_with(b"ERROR") {
            return Err(std::io::Error::other(format!(
                "the server answered with an ERROR: {}",
                String::from_utf8_lossy(&payload)
            )));
        }
    }
}

/// A client-to-server text frame (masked, with a zero key: the payload goes as it is).
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n => {
            let n = u16::try_from(n).expect("set-up and SEND frames are small");
            f.push(0x80 | 126);
            f.extend_from_slice(&n.to_be_bytes());
        }
    }
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(payload);
    f
}

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
