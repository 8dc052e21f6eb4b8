//! The TCP star that joins the ranks of a data-parallel run and averages their gradients.
//!
//! Wire format (little-endian):
//! * handshake, rank `r > 0` to rank 0: `"BNDP"`, u32 protocol version, u32 nodes, u32 rank, u64 fingerprint;
//!   rank 0 answers once every rank has joined: u8 status (0 accepted, 1 refused), u16 length, that many bytes
//!   of UTF-8 reason;
//! * each exchange, both ways: `"GRAD"`, u64 exchange number, u64 value count, then the values as f32.
//!
//! Every length is checked against what this rank expects before anything is read into memory: a peer can make
//! a rank fail, never allocate.

use super::DataParallel;
use crate::error::{Result, TrainError};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const HELLO: &[u8; 4] = b"BNDP";
const FRAME: &[u8; 4] = b"GRAD";
const VERSION: u32 = 1;
/// How long ranks wait for each other to start.
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a rank waits for a peer's gradients (a slower peer, a long validation) before giving up.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Values per read or write of a frame.
const CHUNK: usize = 1 << 14;

/// The error of an exchange whose connection to `who` failed with `e`. A peer that ended shows as the end of its
/// stream, a reset or a broken pipe, depending on what was in flight: all three read "the connection closed".
fn peer_error(who: &str, e: std::io::Error) -> TrainError {
    use std::io::ErrorKind;
    let why = match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("no gradients for {} s", STEP_TIMEOUT.as_secs()),
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => "the connection closed (the process ended?)".to_string(),
        _ => e.to_string(),
    };
    TrainError::Io(format!("data-parallel run: {who}: {why}"))
}

/// The port of a `host:port` coordinator address (1..=65535, a non-empty host).
pub(super) fn port_of(address: &str) -> Result<u16> {
    let bad =
        || TrainError::Config(format!("--coordinator must be HOST:PORT with a port in 1..=65535, got '{address}'"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(port)
}

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> TrainError {
    move |e| TrainError::Io(format!("data-parallel run: {context}: {e}"))
}

/// One rank's connections.
pub(super) enum Link {
    /// Rank 0: a connection to each other rank, in rank order.
    Hub { peers: Vec<Peer> },
    /// Rank `r > 0`: the connection to rank 0.
    Spoke { hub: Peer },
}

/// A buffered connection.
pub(super) struct Peer {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    exchanges: u64,
}

impl Peer {
    fn new(stream: TcpStream) -> Result<Self> {
        stream.set_nodelay(true).map_err(io("configuring a connection"))?;
        let reader = BufReader::with_capacity(1 << 20, stream.try_clone().map_err(io("cloning a connection"))?);
        Ok(Peer { reader, writer: BufWriter::with_capacity(1 << 20, stream), exchanges: 0 })
    }

    fn set_timeout(&self, timeout: Duration) -> Result<()> {
        self.writer.get_ref().set_read_timeout(Some(timeout)).map_err(io("configuring a connection"))
    }

    /// Sends `values` as the frame of this exchange.
    fn send(&mut self, values: &[f32], who: &str) -> Result<()> {
        let mut header = [0u8; 20];
        header[..4].copy_from_slice(FRAME);
        header[4..12].copy_from_slice(&self.exchanges.to_le_bytes());
        header[12..].copy_from_slice(&(values.len() as u64).to_le_bytes());
        let lost = |e: std::io::Error| peer_error(who, e);
        self.writer.write_all(&header).map_err(lost)?;
        let mut bytes = Vec::with_capacity(CHUNK * 4);
        for chunk in values.chunks(CHUNK) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            self.writer.write_all(&bytes).map_err(lost)?;
        }
        self.writer.flush().map_err(lost)
    }

    /// Receives this exchange's frame of `n` values and hands each chunk to `take(offset, values)`.
    fn receive(&mut self, n: usize, who: &str, mut take: impl FnMut(usize, &[f32])) -> Result<()> {
        let lost = |e: std::io::Error| peer_error(who, e);
        let mut header = [0u8; 20];
        self.reader.read_exact(&mut header).map_err(lost)?;
        let exchange = u64::from_le_bytes(std::array::from_fn(|i| header[4 + i]));
        let count = u64::from_le_bytes(std::array::from_fn(|i| header[12 + i]));
        if &header[..4] != FRAME {
            return Err(TrainError::Io(format!(
                "data-parallel run: {who} sent something that is not a gradient frame"
            )));
        }
        if exchange != self.exchanges || count != n as u64 {
            return Err(TrainError::Io(format!(
                "data-parallel run: {who} sent exchange {exchange} of {count} values, this rank expects exchange {} of \
                 {n} (the ranks run different models or steps)",
                self.exchanges
            )));
        }
        let mut bytes = vec![0u8; CHUNK * 4];
        let mut values = Vec::with_capacity(CHUNK);
        let mut offset = 0;
        while offset < n {
            let len = CHUNK.min(n - offset);
            self.reader.read_exact(&mut bytes[..len * 4]).map_err(lost)?;
            values.clear();
            values.extend(bytes[..len * 4].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            take(offset, &values);
            offset += len;
        }
        Ok(())
    }
}

impl Link {
    /// Joins the run `run` as its rank, within [`JOIN_TIMEOUT`].
    pub(super) fn connect(run: &DataParallel, fingerprint: u64) -> Result<Link> {
        if run.rank == 0 {
            Self::accept(run, fingerprint)
        } else {
            Self::dial(run, fingerprint)
        }
    }

    fn accept(run: &DataParallel, fingerprint: u64) -> Result<Link> {
        let port = port_of(&run.coordinator)?;
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(io(format!("--coordinator port {port}")))?;
        listener.set_nonblocking(true).map_err(io("listening"))?;
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let mut joined: Vec<Option<Peer>> = (1..run.nodes).map(|_| None).collect();
        while joined.iter().any(Option::is_none) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = (1..run.nodes)
                            .filter(|r| joined[*r as usize - 1].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        return Err(TrainError::Io(format!(
                            "data-parallel run: rank(s) {} did not join within {} s",
                            missing.join(", "),
                            JOIN_TIMEOUT.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(io("accepting a rank")(e)),
            };
            stream.set_nonblocking(false).map_err(io("accepting a rank"))?;
            let mut peer = Peer::new(stream)?;
            peer.set_timeout(Duration::from_secs(10))?;
            let mut hello = [0u8; 24];
            if peer.reader.read_exact(&mut hello).is_err() || &hello[..4] != HELLO {
                // Not a rank of ours (a port scan, another program): ignore it.
                continue;
            }
            let word = |at: usize| u32::from_le_bytes(std::array::from_fn(|i| hello[at + i]));
            let (version, nodes, rank) = (word(4), word(8), word(12));
            let theirs = u64::from_le_bytes(std::array::from_fn(|i| hello[16 + i]));
            let refusal = if version != VERSION {
                Some(format!("protocol version {version}, rank 0 speaks {VERSION} (another bitnet version)"))
            } else if nodes != run.nodes {
                Some(format!("--nodes {nodes}, rank 0 has --nodes {}", run.nodes))
            } else if rank == 0 || rank >= run.nodes {
                Some(format!("--rank {rank} is not in 1..{}", run.nodes))
            } else if joined[rank as usize - 1].is_some() {
                Some(format!("rank {rank} joined twice"))
            } else if theirs != fingerprint {
                Some(format!(
                    "rank {rank} runs another training run than rank 0 (architecture, options, training text, \
                     starting weights or checkpoint differ)"
                ))
            } else {
                None
            };
            if let Some(why) = refusal {
                Self::answer(&mut peer, Some(&why));
                return Err(TrainError::Config(format!("data-parallel run: refused a rank: {why}")));
            }
            joined[rank as usize - 1] = Some(peer);
        }
        let mut peers: Vec<Peer> = joined.into_iter().flatten().collect();
        for peer in &mut peers {
            Self::answer(peer, None);
            peer.set_timeout(STEP_TIMEOUT)?;
        }
        Ok(Link::Hub { peers })
    }

    /// Accepts (`None`) or refuses a rank; a rank that already left does not matter.
    fn answer(peer: &mut Peer, refusal: Option<&str>) {
        let why = refusal.unwrap_or("").as_bytes();
        let why = &why[..why.len().min(1024)];
        let mut reply = vec![u8::from(refusal.is_some())];
        reply.extend_from_slice(&(why.len() as u16).to_le_bytes());
        reply.extend_from_slice(why);
        let _ = peer.writer.write_all(&reply).and_then(|_| peer.writer.flush());
    }

    fn dial(run: &DataParallel, fingerprint: u64) -> Result<Link> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let stream = loop {
            let attempt = run
                .coordinator
                .to_socket_addrs()
                .and_then(|mut addrs| addrs.next().ok_or_else(|| std::io::ErrorKind::NotFound.into()))
                .and_then(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(5)));
            match attempt {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => {
                    return Err(io(format!("rank 0 at {} did not answer", run.coordinator))(e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let mut hub = Peer::new(stream)?;
        let mut hello = Vec::with_capacity(24);
        hello.extend_from_slice(HELLO);
        for word in [VERSION, run.nodes, run.rank] {
            hello.extend_from_slice(&word.to_le_bytes());
        }
        hello.extend_from_slice(&fingerprint.to_le_bytes());
        let sent = hub.writer.write_all(&hello).and_then(|_| hub.writer.flush());
        sent.map_err(io(format!("joining rank 0 at {}", run.coordinator)))?;
        // Rank 0 answers when every rank has joined.
        hub.set_timeout(JOIN_TIMEOUT)?;
        let mut status = [0u8; 3];
        hub.reader.read_exact(&mut status).map_err(io(format!("waiting for rank 0 at {}", run.coordinator)))?;
        let len = u16::from_le_bytes([status[1], status[2]]) as usize;
        let mut why = vec![0u8; len.min(1024)];
        hub.reader.read_exact(&mut why).map_err(io("reading rank 0's answer"))?;
        if status[0] != 0 {
            return Err(TrainError::Config(format!(
                "data-parallel run: rank 0 refused this rank: {}",
                String::from_utf8_lossy(&why)
            )));
        }
        hub.set_timeout(STEP_TIMEOUT)?;
        Ok(Link::Spoke { hub })
    }

    /// Replaces `values` by the mean of every rank's `values`: rank 0 sums the ranks' values in rank order and
    /// sends the mean back, so every rank ends with the same bits.
    pub(super) fn mean(&mut self, values: &mut [f32]) -> Result<()> {
        match self {
            Link::Hub { peers } => {
                let nodes = (peers.len() + 1) as f32;
                for (i, peer) in peers.iter_mut().enumerate() {
                    let who = format!("rank {}", i + 1);
                    peer.receive(values.len(), &who, |offset, theirs| {
                        for (mine, theirs) in values[offset..offset + theirs.len()].iter_mut().zip(theirs) {
                            *mine += theirs;
                        }
                    })?;
                }
                values.iter_mut().for_each(|v| *v /= nodes);
                for (i, peer) in peers.iter_mut().enumerate() {
                    peer.send(values, &format!("rank {}", i + 1))?;
                    peer.exchanges += 1;
                }
            }
            Link::Spoke { hub } => {
                hub.send(values, "rank 0")?;
                hub.receive(values.len(), "rank 0", |offset, mean| {
                    values[offset..offset + mean.len()].copy_from_slice(mean)
                })?;
                hub.exchanges += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(nodes: u32, rank: u32, port: u16) -> DataParallel {
        DataParallel { nodes, rank, coordinator: format!("127.0.0.1:{port}") }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn three_ranks_end_with_the_same_mean() {
        let port = free_port();
        let n = 40_000; // more than two chunks
        let ranks: Vec<_> = (0..3u32)
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut link = Link::connect(&run(3, rank, port), 7).unwrap();
                    let mut out = Vec::new();
                    for exchange in 0..3 {
                        let mut values: Vec<f32> =
                            (0..n).map(|i| (i as f32) * (rank + 1) as f32 + exchange as f32).collect();
                        link.mean(&mut values).unwrap();
                        out.push(values);
                    }
                    out
                })
            })
            .collect();
        let results: Vec<Vec<Vec<f32>>> = ranks.into_iter().map(|t| t.join().unwrap()).collect();
        for (exchange, mean) in results[0].iter().enumerate() {
            for i in [0, 1, 16_383, 16_384, n - 1] {
                let expected = ((i as f32) + (2 * i) as f32 + (3 * i) as f32 + 3.0 * exchange as f32) / 3.0;
                assert_eq!(mean[i], expected, "exchange {exchange}, value {i}");
            }
            assert_eq!(*mean, results[1][exchange]);
            assert_eq!(*mean, results[2][exchange]);
        }
    }

    #[test]
    fn a_rank_of_another_run_or_model_is_refused() {
        let port = free_port();
        let hub = std::thread::spawn(move || Link::connect(&run(2, 0, port), 1).err().unwrap().to_string());
        let spoke = Link::connect(&run(2, 1, port), 2).err().unwrap().to_string();
        assert!(spoke.contains("refused") && spoke.contains("another training run"), "{spoke}");
        assert!(hub.join().unwrap().contains("another training run"));

        // Joined, but with gradients of another size: both sides fail with the counts, nothing is allocated.
        let port = free_port();
        let hub = std::thread::spawn(move || {
            let mut link = Link::connect(&run(2, 0, port), 1).unwrap();
            link.mean(&mut [0.0; 4]).err().unwrap().to_string()
        });
        let mut link = Link::connect(&run(2, 1, port), 1).unwrap();
        let spoke = link.mean(&mut [0.0; 5]).err().unwrap().to_string();
        let hub = hub.join().unwrap();
        assert!(hub.contains("exchange 0 of 5 values") && hub.contains("exchange 0 of 4"), "{hub}");
        assert!(spoke.contains("rank 0"), "{spoke}");
    }

    #[test]
    fn a_peer_that_ends_reads_as_a_closed_connection() {
        // Its end shows as end of stream, a reset or a broken pipe, depending on what was in flight.
        use std::io::{Error, ErrorKind};
        for kind in [ErrorKind::UnexpectedEof, ErrorKind::ConnectionReset, ErrorKind::BrokenPipe] {
            let message = peer_error("rank 1", Error::from(kind)).to_string();
            assert!(message.contains("rank 1: the connection closed"), "{kind:?}: {message}");
        }
        let message = peer_error("rank 1", Error::from(ErrorKind::TimedOut)).to_string();
        assert!(message.contains("no gradients for"), "{message}");

        let port = free_port();
        let hub = std::thread::spawn(move || {
            let mut link = Link::connect(&run(2, 0, port), 3).unwrap();
            link.mean(&mut [0.0; 4]).err().unwrap().to_string()
        });
        drop(Link::connect(&run(2, 1, port), 3).unwrap());
        let hub = hub.join().unwrap();
        assert!(hub.contains("rank 1: the connection closed"), "{hub}");
    }

    #[test]
    fn strangers_on_the_port_are_ignored() {
        let port = free_port();
        let hub = std::thread::spawn(move || Link::connect(&run(2, 0, port), 9));
        // Something that is not a rank connects first and sends garbage.
        let mut stranger = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stranger.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut link = Link::connect(&run(2, 1, port), 9).unwrap();
        let mut hub = hub.join().unwrap().unwrap();
        let spoke = std::thread::spawn(move || {
            let mut v = [2.0f32, 4.0];
            link.mean(&mut v).unwrap();
            v
        });
        let mut v = [0.0f32, 0.0];
        hub.mean(&mut v).unwrap();
        assert_eq!(v, [1.0, 2.0]);
        assert_eq!(spoke.join().unwrap(), [1.0, 2.0]);
    }
}
