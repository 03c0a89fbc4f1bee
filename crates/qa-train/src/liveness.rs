//! Which peer is gone: the first failure a run's peers learn of ([`Failure`]), from a peer of
//! this process or, with several nodes, from [`Liveness`]: every node keeps one TCP connection
//! to node 0, so a node that dies (its kernel closes the socket) is named within moments,
//! instead of surfacing as a stuck or broken all-reduce somewhere else. Only liveness travels
//! here; tensors go through burn-collective.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Result, TrainError};

/// The first failure of a run, shared by everything that watches it.
#[derive(Debug, Default)]
pub struct Failure {
    first: Mutex<Option<String>>,
}

impl Failure {
    /// Records `what` happened, unless something failed before.
    pub fn mark(&self, what: String) {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(what);
    }

    pub fn get(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// This node's liveness connections: node 0 holds one from every other node; the others hold
/// theirs to node 0. A line protocol: `node R` (hello), `done` (left normally), `lost WHAT`
/// (node 0 telling the others whom it lost).
pub struct Liveness {
    /// This node has finished: a connection closing after this is no failure.
    done: Arc<AtomicBool>,
    /// Node 0: a connection to each other node; others: the one to node 0.
    links: Arc<Mutex<Vec<TcpStream>>>,
    /// Node 0: nodes that said `done`.
    finished: Arc<Mutex<usize>>,
    /// How many `done`s to wait for at the end: the other nodes (node 0), or none.
    waits_for: usize,
}

impl Liveness {
    /// Node 0: listens on `port` and waits (at most `timeout`) until the other `nodes - 1`
    /// nodes have connected.
    pub fn serve(
        port: u16,
        nodes: usize,
        timeout: Duration,
        failure: Arc<Failure>,
    ) -> Result<Self> {
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
            TrainError::World(format!(
                "cannot serve the nodes' liveness connections on port {port} (--master-port + 1 + \
                 --nnodes): {e}"
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| TrainError::World(format!("liveness port {port}: {e}")))?;
        let liveness = Self::new(nodes - 1);
        let started = Instant::now();
        let mut joined = std::collections::BTreeSet::new();
        while joined.len() + 1 < nodes {
            match listener.accept() {
                Ok((stream, address)) => {
                    // A connection that is no node of this run is dropped, not counted.
                    let Some((rank, lines)) = hello(&stream, nodes, timeout) else {
                        tracing::warn!("liveness port {port}: {address} is no node of this run");
                        continue;
                    };
                    if !joined.insert(rank) {
                        return Err(TrainError::World(format!(
                            "two nodes say they are node {rank} (the second from {address}): \
                             give each its own --node-rank"
                        )));
                    }
                    liveness.lock_links().push(stream);
                    let name = format!("node {rank} ({})", address.ip());
                    liveness.watch_node(lines, name, &failure);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(what) = failure.get() {
                        return Err(TrainError::World(what));
                    }
                    if started.elapsed() >= timeout {
                        return Err(TrainError::World(format!(
                            "only nodes {joined:?} of 1..{nodes} connected to node 0 on port \
                             {port} within {} s: are the others started, with the same \
                             --master-addr and --master-port?",
                            timeout.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(TrainError::World(format!("liveness port {port}: {e}")));
                }
            }
        }
        Ok(liveness)
    }

    /// Node `rank` > 0: connects to node 0 (retrying until `timeout`, as node 0 may start later).
    pub fn join(
        master: (&str, u16),
        rank: usize,
        timeout: Duration,
        failure: Arc<Failure>,
    ) -> Result<Self> {
        let started = Instant::now();
        let stream = loop {
            match TcpStream::connect(master) {
                Ok(stream) => break stream,
                Err(e) if started.elapsed() >= timeout => {
                    return Err(TrainError::World(format!(
                        "node 0 cannot be reached at {}:{} within {} s: {e}",
                        master.0,
                        master.1,
                        timeout.as_secs()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let liveness = Self::new(0);
        let broken = |e: std::io::Error| {
            TrainError::World(format!(
                "liveness connection to node 0 at {}:{}: {e}",
                master.0, master.1
            ))
        };
        let mut greeting = stream.try_clone().map_err(broken)?;
        writeln!(greeting, "node {rank}").map_err(broken)?;
        let lines = BufReader::new(stream.try_clone().map_err(broken)?);
        liveness.lock_links().push(stream);
        liveness.watch_node(lines, format!("node 0 ({})", master.0), &failure);
        Ok(liveness)
    }

    fn new(waits_for: usize) -> Self {
        Self {
            done: Arc::new(AtomicBool::new(false)),
            links: Arc::new(Mutex::new(Vec::new())),
            finished: Arc::new(Mutex::new(0)),
            waits_for,
        }
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads one connection until it closes; a close before `done` is a lost node, which node 0
    /// also tells every other node.
    fn watch_node(&self, lines: BufReader<TcpStream>, name: String, failure: &Arc<Failure>) {
        let (done, links, finished, failure) = (
            self.done.clone(),
            self.links.clone(),
            self.finished.clone(),
            failure.clone(),
        );
        std::thread::spawn(move || {
            let mut said_done = false;
            for line in lines.lines() {
                let Ok(line) = line else { break };
                if line == "done" {
                    said_done = true;
                    *finished.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                } else if let Some(what) = line.strip_prefix("lost ") {
                    failure.mark(what.to_string());
                }
            }
            if said_done || done.load(Ordering::SeqCst) {
                return;
            }
            let what = format!(
                "{name} closed its connection before the end of the run: its process died, was \
                 killed or lost the network"
            );
            failure.mark(what.clone());
            for mut link in links.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = writeln!(link, "lost {what}");
            }
        });
    }

    /// Says this node ended normally; node 0 then waits (at most `timeout`) for the others to
    /// say so too, so that no node loses node 0 while it still needs it.
    pub fn finish(&self, timeout: Duration) {
        self.done.store(true, Ordering::SeqCst);
        for mut link in self.lock_links().iter() {
            let _ = writeln!(link, "done");
        }
        let started = Instant::now();
        while *self.finished.lock().unwrap_or_else(|e| e.into_inner()) < self.waits_for
            && started.elapsed() < timeout
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads a new connection's `node R` line (waiting at most `timeout`): R, when it names another
/// node of a run of `nodes`, and the connection's reader.
fn hello(
    stream: &TcpStream,
    nodes: usize,
    timeout: Duration,
) -> Option<(usize, BufReader<TcpStream>)> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let mut lines = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    lines.read_line(&mut line).ok()?;
    let rank: usize = line.trim().strip_prefix("node ")?.parse().ok()?;
    // Watching it blocks until it closes, however long the run.
    stream.set_read_timeout(None).ok()?;
    (1..nodes).contains(&rank).then_some((rank, lines))
}
