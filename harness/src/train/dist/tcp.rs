//! The rendezvous and control connection of a data-parallel run ([`Control`]), and the CPU
//! transport built on it ([`Tcp`]).
//!
//! Rank 0 listens at `MASTER_ADDR:MASTER_PORT`; every other rank connects (retrying until
//! `CRAMBENCH_DIST_TIMEOUT` seconds, default 3600, have passed: rank 0 may still be preparing
//! data) and introduces itself with its rank and the world size. Frames are
//! `[tag u8][length u64 LE][payload]`. Reductions go through rank 0 (a star): each rank sends
//! its values, rank 0 adds them in rank order and sends the result back, so every rank gets the
//! same bits. A rank that goes away ends the others' operations with an error naming it.
use super::Collective;
use crate::error::Error;
use anyhow::Result;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use tch::Tensor;

/// Frame tags.
pub mod tag {
    pub const HELLO: u8 = 1;
    pub const JOB: u8 = 2;
    pub const EXIT: u8 = 3;
    pub const F32: u8 = 4;
    pub const F64: u8 = 5;
    pub const BYTES: u8 = 6;
    pub const RESULT: u8 = 7;
}

/// Largest frame accepted (a flat gradient of 2^31 floats).
const MAX_FRAME: u64 = 8 << 30;

/// Seconds a rank waits for the rendezvous (`CRAMBENCH_DIST_TIMEOUT`, default 3600).
pub fn timeout() -> Duration {
    let s = std::env::var("CRAMBENCH_DIST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(3600.0);
    Duration::from_secs_f64(s)
}

fn lost(peer: &str, e: std::io::Error) -> anyhow::Error {
    Error::Io {
        path: format!("data-parallel connection to {peer}"),
        source: std::io::Error::new(
            e.kind(),
            format!("{e} (the other process failed or was stopped; see its output)"),
        ),
    }
    .into()
}

fn write_frame(s: &mut TcpStream, peer: &str, t: u8, payload: &[u8]) -> Result<()> {
    let mut head = [0u8; 9];
    head[0] = t;
    head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    s.write_all(&head)
        .and_then(|_| s.write_all(payload))
        .and_then(|_| s.flush())
        .map_err(|e| lost(peer, e))
}

fn read_frame(s: &mut TcpStream, peer: &str) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).map_err(|e| lost(peer, e))?;
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    if len > MAX_FRAME {
        return Err(Error::Check(format!(
            "data-parallel connection to {peer}: a frame of {len} bytes (not a crambench rank?)"
        ))
        .into());
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).map_err(|e| lost(peer, e))?;
    Ok((head[0], buf))
}

fn expect(got: (u8, Vec<u8>), want: u8, peer: &str) -> Result<Vec<u8>> {
    if got.0 != want {
        return Err(Error::Check(format!(
            "data-parallel connection to {peer}: expected message {want}, got {} (the ranks \
             are out of step: do they run the same crambench and recipe?)",
            got.0
        ))
        .into());
    }
    Ok(got.1)
}

/// The control connections of one rank: to every other rank on rank 0, to rank 0 elsewhere.
pub struct Control {
    rank: usize,
    world: usize,
    /// Rank 0: streams of ranks 1..world (index r-1). Other ranks: the stream to rank 0.
    peers: Vec<TcpStream>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Control(rank {} of {})", self.rank, self.world)
    }
}

impl Control {
    /// Rank 0: listen on `addr:port` (port 0: any free port, see [`Control::bind`]) and accept
    /// the other `world - 1` ranks.
    pub fn listen(addr: &str, port: u16, world: usize) -> Result<Control> {
        let l = Self::bind(addr, port)?;
        Self::accept(l, world)
    }

    /// Bind the rendezvous socket (before starting the other ranks, so they find it).
    pub fn bind(addr: &str, port: u16) -> Result<TcpListener> {
        // Rank 0 listens on every interface of the machine named by MASTER_ADDR.
        let bind_addr = if addr == "localhost" || addr.starts_with("127.") {
            format!("{addr}:{port}")
        } else {
            format!("0.0.0.0:{port}")
        };
        TcpListener::bind(&bind_addr).map_err(|e| {
            Error::Io {
                path: format!("rendezvous {bind_addr} (MASTER_ADDR/MASTER_PORT)"),
                source: e,
            }
            .into()
        })
    }

    /// Rank 0: accept the other ranks on `l`.
    pub fn accept(l: TcpListener, world: usize) -> Result<Control> {
        let deadline = Instant::now() + timeout();
        l.set_nonblocking(true).map_err(|e| lost("rendezvous", e))?;
        let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        let mut missing = world - 1;
        while missing > 0 {
            match l.accept() {
                Ok((mut s, from)) => {
                    s.set_nonblocking(false)
                        .map_err(|e| lost("rendezvous", e))?;
                    let _ = s.set_nodelay(true);
                    let peer = from.to_string();
                    let hello = expect(read_frame(&mut s, &peer)?, tag::HELLO, &peer)?;
                    if hello.len() != 16 {
                        return Err(
                            Error::Check(format!("rendezvous: bad hello from {peer}")).into()
                        );
                    }
                    let r = u64::from_le_bytes(hello[..8].try_into().expect("8")) as usize;
                    let w = u64::from_le_bytes(hello[8..].try_into().expect("8")) as usize;
                    if w != world || r == 0 || r >= world || slots[r - 1].is_some() {
                        return Err(Error::Check(format!(
                            "rendezvous: {peer} says it is rank {r} of {w}, but this run has \
                             world size {world}{}",
                            if r > 0 && r < world && slots[r - 1].is_some() {
                                " and that rank is already here"
                            } else {
                                ""
                            }
                        ))
                        .into());
                    }
                    slots[r - 1] = Some(s);
                    missing -= 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(Error::Check(format!(
                            "rendezvous: {missing} of {} other rank(s) did not connect within \
                             {:.0} s (CRAMBENCH_DIST_TIMEOUT)",
                            world - 1,
                            timeout().as_secs_f64()
                        ))
                        .into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(lost("rendezvous", e)),
            }
        }
        Ok(Control {
            rank: 0,
            world,
            peers: slots
                .into_iter()
                .map(|s| s.expect("all connected"))
                .collect(),
        })
    }

    /// Rank r > 0: connect to rank 0 at `addr:port`, retrying until the timeout.
    pub fn connect(addr: &str, port: u16, rank: usize, world: usize) -> Result<Control> {
        let deadline = Instant::now() + timeout();
        let target = format!("{addr}:{port}");
        let mut s = loop {
            let attempt = target
                .to_socket_addrs()
                .map_err(|e| lost(&target, e))
                .and_then(|mut a| {
                    let sa = a.next().ok_or_else(|| {
                        lost(&target, std::io::Error::other("address does not resolve"))
                    })?;
                    TcpStream::connect_timeout(&sa, Duration::from_secs(5))
                        .map_err(|e| lost(&target, e))
                });
            match attempt {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "rank {rank}: rank 0 did not open the rendezvous at {target} within \
                         {:.0} s (CRAMBENCH_DIST_TIMEOUT)",
                        timeout().as_secs_f64()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let _ = s.set_nodelay(true);
        let mut hello = Vec::with_capacity(16);
        hello.extend_from_slice(&(rank as u64).to_le_bytes());
        hello.extend_from_slice(&(world as u64).to_le_bytes());
        write_frame(&mut s, "rank 0", tag::HELLO, &hello)?;
        Ok(Control {
            rank,
            world,
            peers: vec![s],
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Rank 0: send a frame to every other rank.
    pub fn send_all(&mut self, t: u8, payload: &[u8]) -> Result<()> {
        assert_eq!(self.rank, 0, "send_all is rank 0's");
        for (i, s) in self.peers.iter_mut().enumerate() {
            write_frame(s, &format!("rank {}", i + 1), t, payload)?;
        }
        Ok(())
    }

    /// Rank r > 0: the next frame from rank 0.
    pub fn recv(&mut self) -> Result<(u8, Vec<u8>)> {
        assert_ne!(self.rank, 0, "recv is a worker's");
        read_frame(&mut self.peers[0], "rank 0")
    }

    /// Rank 0's `payload` on every rank.
    pub fn broadcast(&mut self, payload: Option<&[u8]>) -> Result<Vec<u8>> {
        if self.rank == 0 {
            let p = payload.expect("rank 0 broadcasts");
            self.send_all(tag::BYTES, p)?;
            Ok(p.to_vec())
        } else {
            let got = self.recv()?;
            expect(got, tag::BYTES, "rank 0")
        }
    }

    /// Rank r > 0: send a string to rank 0 (for [`Control::gather_strings`]).
    pub fn send_string(&mut self, s: &str) -> Result<()> {
        write_frame(&mut self.peers[0], "rank 0", tag::BYTES, s.as_bytes())
    }

    /// Rank 0: one string from every other rank, in rank order.
    pub fn gather_strings(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (i, s) in self.peers.iter_mut().enumerate() {
            let peer = format!("rank {}", i + 1);
            let b = expect(read_frame(s, &peer)?, tag::BYTES, &peer)?;
            out.push(String::from_utf8_lossy(&b).into_owned());
        }
        Ok(out)
    }

    /// Sum `values` over the ranks, in rank order, in place (f64 or f32 by `T`).
    fn reduce<T: Elem>(&mut self, values: &mut [T]) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        if self.rank == 0 {
            for (i, s) in self.peers.iter_mut().enumerate() {
                let peer = format!("rank {}", i + 1);
                let bytes = expect(read_frame(s, &peer)?, T::TAG, &peer)?;
                if bytes.len() != values.len() * T::SIZE {
                    return Err(Error::Check(format!(
                        "all-reduce: {peer} sent {} values, rank 0 has {} (the ranks' models \
                         differ)",
                        bytes.len() / T::SIZE,
                        values.len()
                    ))
                    .into());
                }
                for (v, c) in values.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                    *v = v.add(T::from_le(c));
                }
            }
            let mut out = Vec::with_capacity(values.len() * T::SIZE);
            for v in values.iter() {
                v.put_le(&mut out);
            }
            self.send_all(tag::RESULT, &out)
        } else {
            let mut out = Vec::with_capacity(values.len() * T::SIZE);
            for v in values.iter() {
                v.put_le(&mut out);
            }
            write_frame(&mut self.peers[0], "rank 0", T::TAG, &out)?;
            let got = expect(self.recv()?, tag::RESULT, "rank 0")?;
            if got.len() != values.len() * T::SIZE {
                return Err(Error::Check("all-reduce: rank 0 answered another size".into()).into());
            }
            for (v, c) in values.iter_mut().zip(got.chunks_exact(T::SIZE)) {
                *v = T::from_le(c);
            }
            Ok(())
        }
    }

    /// Sum of host values over the ranks.
    pub fn all_reduce_sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.reduce(values)
    }

    /// Mean of f32 values over the ranks.
    pub fn all_reduce_mean_f32(&mut self, values: &mut [f32]) -> Result<()> {
        self.reduce(values)?;
        let w = self.world as f32;
        for v in values.iter_mut() {
            *v /= w;
        }
        Ok(())
    }
}

trait Elem: Copy {
    const SIZE: usize;
    const TAG: u8;
    fn add(self, o: Self) -> Self;
    fn from_le(b: &[u8]) -> Self;
    fn put_le(self, out: &mut Vec<u8>);
}

impl Elem for f64 {
    const SIZE: usize = 8;
    const TAG: u8 = tag::F64;
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn from_le(b: &[u8]) -> Self {
        f64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Elem for f32 {
    const SIZE: usize = 4;
    const TAG: u8 = tag::F32;
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().expect("4 bytes"))
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// The CPU transport: tensors are copied to the host and averaged through [`Control`].
#[derive(Debug)]
pub struct Tcp {
    pub control: Control,
}

impl Collective for Tcp {
    fn rank(&self) -> usize {
        self.control.rank
    }
    fn world_size(&self) -> usize {
        self.control.world
    }
    fn backend(&self) -> &'static str {
        "tcp"
    }
    fn all_reduce_mean(&mut self, tensors: &[Tensor]) -> Result<()> {
        if self.control.world == 1 {
            return Ok(());
        }
        let mut flat = super::flatten_host(tensors)?;
        self.control.all_reduce_mean_f32(&mut flat)?;
        super::unflatten_host(tensors, &flat)
    }
    fn all_reduce_sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.control.all_reduce_sum(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_ranks_average_and_agree() {
        let l = Control::bind("127.0.0.1", 0).unwrap();
        let port = l.local_addr().unwrap().port();
        let worker = std::thread::spawn(move || {
            let mut c = Tcp {
                control: Control::connect("127.0.0.1", port, 1, 2).unwrap(),
            };
            let t = Tensor::from_slice(&[3.0f32, 5.0]);
            c.all_reduce_mean(std::slice::from_ref(&t)).unwrap();
            let mut x = [2.0];
            c.all_reduce_sum(&mut x).unwrap();
            let b = c.control.broadcast(None).unwrap();
            let stop = super::super::agree_stop(&mut c, 0).unwrap();
            (Vec::<f32>::try_from(&t).unwrap(), x[0], b, stop)
        });
        let mut c = Tcp {
            control: Control::accept(l, 2).unwrap(),
        };
        let t = Tensor::from_slice(&[1.0f32, 1.0]);
        c.all_reduce_mean(std::slice::from_ref(&t)).unwrap();
        let mut x = [1.5];
        c.all_reduce_sum(&mut x).unwrap();
        c.control.broadcast(Some(b"job")).unwrap();
        // Rank 0 saw the budget spent, rank 1 nothing: both stop for the budget.
        assert_eq!(super::super::agree_stop(&mut c, 2).unwrap(), 2);
        let (wt, wx, wb, ws) = worker.join().unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [2.0, 3.0]);
        assert_eq!(wt, [2.0, 3.0]);
        assert_eq!((x[0], wx), (3.5, 3.5));
        assert_eq!(wb, b"job");
        assert_eq!(ws, 2);
    }

    #[test]
    fn a_rank_that_goes_away_is_named() {
        let l = Control::bind("127.0.0.1", 0).unwrap();
        let port = l.local_addr().unwrap().port();
        let worker = std::thread::spawn(move || {
            let c = Control::connect("127.0.0.1", port, 1, 2).unwrap();
            drop(c);
        });
        let mut c = Control::accept(l, 2).unwrap();
        worker.join().unwrap();
        let e = c.all_reduce_sum(&mut [1.0]).unwrap_err();
        assert!(format!("{e:#}").contains("rank 1"), "{e:#}");
        assert_eq!(crate::error::exit_code_of(&e), crate::ExitCode::Io);
    }
}
