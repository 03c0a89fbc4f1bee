//! Which peer is gone: the first failure a run's peers learn of ([`Failure`]), from a peer of
//! this process or, with several nodes, from [`Liveness`]: every node keeps one TCP connection
//! to node 0, so a node that dies (its kernel closes the socket) is named within moments,
//! instead of surfacing as a stuck or broken all-reduce somewhere else. The connection opens
//! with the node's [`Settings`], which node 0 compares with its own: nodes started with
//! different settings are refused, on both sides, before any tensor travels. Only liveness
//! travels here; tensors go through burn-collective.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::data_parallel::Nodes;
use crate::error::{Result, TrainError};

/// The version of the line protocol, the second word of a node's hello. Version 1 (qa before
/// settings were compared) said only `node R`.
pub const PROTOCOL: u32 = 2;

/// The first word of a node's hello.
const HELLO: &str = "qa-liveness";

/// The longest hello or reply line read: a connection sending more is no node of this run.
const MAX_LINE: u64 = 64 * 1024;

/// How long node 0 waits for a new connection's hello (a node sends it as it connects), so that
/// a silent stranger cannot hold up the others for the whole timeout.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node waits, while node 0's rendezvous port answers but its liveness port does
/// not, before it concludes that node 0 listens elsewhere (another `--nnodes`). Node 0 opens its
/// liveness port moments after its rendezvous.
const ELSEWHERE_GRACE: Duration = Duration::from_secs(10);

/// The settings every node of a run must share, in order: each as the user knows it (a flag,
/// or a short name) with its value. Node 0 refuses a node whose settings differ from its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(Vec<(String, String)>);

impl Settings {
    pub fn new() -> Self {
        Self::default()
    }

    /// These settings and `name` = `value` (shown as `{name} {value}` in messages).
    pub fn with(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        // One line on the wire, whatever a value holds.
        let value = value.to_string().replace(['\n', '\r'], " ");
        self.0.push((name.to_string(), value));
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Why node `rank`, started with `theirs`, may not join node 0, started with these: every
    /// setting that differs, with both values; `None` when they agree.
    pub fn mismatch(&self, rank: usize, theirs: &Settings) -> Option<String> {
        let show = |settings: &Settings, name: &str| match settings.get(name) {
            Some(value) => format!("{name} {value}"),
            None => format!("no {name}"),
        };
        let names = self.0.iter().map(|(name, _)| name).chain(
            theirs
                .0
                .iter()
                .map(|(name, _)| name)
                .filter(|n| self.get(n).is_none()),
        );
        let (mut their_side, mut our_side) = (Vec::new(), Vec::new());
        for name in names {
            if self.get(name) != theirs.get(name) {
                their_side.push(show(theirs, name));
                our_side.push(show(self, name));
            }
        }
        if their_side.is_empty() {
            return None;
        }
        Some(format!(
            "node {rank} runs with {} but node 0 with {}: start every node with the same settings",
            enumerate(&their_side),
            enumerate(&our_side)
        ))
    }

    fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("strings serialize")
    }

    fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok().map(Self)
    }
}

/// `a`, `a and b`, `a, b and c`.
fn enumerate(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

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
/// theirs to node 0. A line protocol: `qa-liveness 2 node R SETTINGS` (a node's hello, its
/// [`Settings`] as JSON), answered `ok` or `refused WHY` by node 0; `ready` (a node's tensor
/// server is up) answered `go` by node 0 once every node's is ([`Liveness::all_ready`]); then
/// `done` (left normally) and `lost WHAT` (node 0 telling the others whom it lost, or why the run
/// stops).
pub struct Liveness {
    /// This node has finished: a connection closing after this is no failure.
    done: Arc<AtomicBool>,
    /// Node 0: a connection to each other node; others: the one to node 0.
    links: Arc<Mutex<Vec<TcpStream>>>,
    /// Node 0: nodes that said `done`.
    finished: Arc<Mutex<usize>>,
    /// Node 0: nodes that said `ready`; others: whether node 0 said `go` (1).
    ready: Arc<Mutex<usize>>,
    /// How many `done`s to wait for at the end: the other nodes (node 0), or none.
    waits_for: usize,
}

impl Liveness {
    /// Node 0: listens on the liveness port and waits (at most `timeout`) until the other
    /// nodes have connected, each started with these `settings`. A node started with others is
    /// told so and refused, and this node stops with the same error (as do the nodes already
    /// in).
    pub fn serve(
        nodes: &Nodes,
        timeout: Duration,
        failure: Arc<Failure>,
        settings: &Settings,
    ) -> Result<Self> {
        let port = nodes.liveness_port()?;
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
            TrainError::World(format!(
                "cannot serve the nodes' liveness connections on port {port} (--master-port + 1 + \
                 --nnodes): {e}"
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| TrainError::World(format!("liveness port {port}: {e}")))?;
        let liveness = Self::new(nodes.count - 1);
        match liveness.admit(&listener, nodes.count, port, timeout, &failure, settings) {
            Ok(()) => Ok(liveness),
            Err(what) => {
                // The nodes already in learn why the run stops, not only that node 0 is gone.
                for mut link in liveness.lock_links().iter() {
                    let _ = writeln!(link, "lost {what}");
                }
                Err(TrainError::World(what))
            }
        }
    }

    /// Accepts the other `nodes - 1` nodes: why not, when they cannot all be.
    fn admit(
        &self,
        listener: &TcpListener,
        nodes: usize,
        port: u16,
        timeout: Duration,
        failure: &Arc<Failure>,
        settings: &Settings,
    ) -> std::result::Result<(), String> {
        let started = Instant::now();
        let mut joined = std::collections::BTreeSet::new();
        while joined.len() + 1 < nodes {
            match listener.accept() {
                Ok((stream, address)) => {
                    // A connection that is no node of this run is dropped, not counted.
                    let (rank, theirs, lines) =
                        match read_hello(&stream, timeout.min(HELLO_TIMEOUT)) {
                            Some((Hello::Node { rank, settings }, lines)) => {
                                (rank, settings, lines)
                            }
                            Some((Hello::OtherVersion(version), _)) => {
                                let what = format!(
                                    "{address} speaks liveness protocol {version} but node 0 \
                                     protocol {PROTOCOL}: run the same version of qa on every node"
                                );
                                refuse(&stream, &what);
                                return Err(what);
                            }
                            Some((Hello::Garbage, _)) | None => {
                                tracing::warn!(
                                    "liveness port {port}: {address} is no node of this run"
                                );
                                continue;
                            }
                        };
                    if let Some(what) = settings.mismatch(rank, &theirs) {
                        refuse(&stream, &what);
                        return Err(what);
                    }
                    if !(1..nodes).contains(&rank) {
                        refuse(
                            &stream,
                            &format!("node 0 runs with --nnodes {nodes}: there is no node {rank}"),
                        );
                        tracing::warn!(
                            "liveness port {port}: {address} says it is node {rank}, no node of \
                             this run"
                        );
                        continue;
                    }
                    if !joined.insert(rank) {
                        let what = format!(
                            "two nodes say they are node {rank} (the second from {address}): \
                             give each its own --node-rank"
                        );
                        refuse(&stream, &what);
                        return Err(what);
                    }
                    if let Err(e) = writeln!(&stream, "ok") {
                        // Its watcher finds it gone and names it.
                        tracing::debug!("liveness port {port}: node {rank}: {e}");
                    }
                    self.lock_links().push(stream);
                    let name = format!("node {rank} ({})", address.ip());
                    self.watch_node(lines, name, failure);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(what) = failure.get() {
                        return Err(what);
                    }
                    if started.elapsed() >= timeout {
                        return Err(format!(
                            "only nodes {joined:?} of 1..{nodes} connected to node 0 on port \
                             {port} within {} s: are the others started, with the same \
                             --master-addr, --master-port and --nnodes ({nodes})? (a node with \
                             another --nnodes looks for node 0 on another port)",
                            timeout.as_secs()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(format!("liveness port {port}: {e}")),
            }
        }
        Ok(())
    }

    /// Node `nodes.rank` > 0: connects to node 0 (retrying until `timeout`, as node 0 may start
    /// later) and says hello with these `settings`; node 0 refusing them is this node's error.
    pub fn join(
        nodes: &Nodes,
        timeout: Duration,
        failure: Arc<Failure>,
        settings: &Settings,
    ) -> Result<Self> {
        Self::join_within(nodes, timeout, ELSEWHERE_GRACE, failure, settings)
    }

    /// [`Self::join`], concluding after `grace` that node 0 listens elsewhere.
    fn join_within(
        nodes: &Nodes,
        timeout: Duration,
        grace: Duration,
        failure: Arc<Failure>,
        settings: &Settings,
    ) -> Result<Self> {
        let port = nodes.liveness_port()?;
        let host = nodes.master_addr.as_str();
        let stream = reach_node_0(nodes, port, timeout, grace)?;
        let broken = |e: std::io::Error| {
            TrainError::World(format!(
                "liveness connection to node 0 at {host}:{port}: {e}"
            ))
        };
        writeln!(
            &stream,
            "{HELLO} {PROTOCOL} node {} {}",
            nodes.rank,
            settings.to_json()
        )
        .map_err(broken)?;
        stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(broken)?;
        let mut lines = BufReader::new(stream.try_clone().map_err(broken)?);
        let reply = read_line(&mut lines).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                TrainError::World(format!(
                    "node 0 at {host}:{port} did not answer this node's hello within {} s",
                    timeout.as_secs()
                ))
            }
            _ => broken(e),
        })?;
        let reply = reply.trim_end_matches(['\n', '\r']);
        if let Some(what) = reply.strip_prefix("refused ") {
            return Err(TrainError::World(what.to_string()));
        }
        if reply != "ok" {
            return Err(TrainError::World(if reply.is_empty() {
                format!(
                    "node 0 at {host}:{port} closed the connection without answering this \
                     node's hello: it runs another version of qa, or is no node of this run"
                )
            } else {
                let shown: String = reply.chars().take(80).collect();
                format!(
                    "node 0 at {host}:{port} answered this node's hello with {shown:?}: it is \
                     no node of this run"
                )
            }));
        }
        // Watching it blocks until it closes, however long the run.
        stream.set_read_timeout(None).map_err(broken)?;
        let liveness = Self::new(0);
        liveness.lock_links().push(stream);
        liveness.watch_node(lines, format!("node 0 ({host})"), &failure);
        Ok(liveness)
    }

    fn new(waits_for: usize) -> Self {
        Self {
            done: Arc::new(AtomicBool::new(false)),
            links: Arc::new(Mutex::new(Vec::new())),
            finished: Arc::new(Mutex::new(0)),
            ready: Arc::new(Mutex::new(0)),
            waits_for,
        }
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads one connection until it closes; a close before `done` is a lost node, which node 0
    /// also tells every other node.
    fn watch_node(&self, lines: BufReader<TcpStream>, name: String, failure: &Arc<Failure>) {
        let (done, links, finished, ready, failure) = (
            self.done.clone(),
            self.links.clone(),
            self.finished.clone(),
            self.ready.clone(),
            failure.clone(),
        );
        std::thread::spawn(move || {
            let mut said_done = false;
            for line in lines.lines() {
                let Ok(line) = line else { break };
                if line == "done" {
                    said_done = true;
                    *finished.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                } else if line == "ready" || line == "go" {
                    *ready.lock().unwrap_or_else(|e| e.into_inner()) += 1;
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

    /// Waits (at most `timeout`) until every node's tensor server is up, this node's being up
    /// now: the others say `ready` to node 0, which says `go` to all once it has heard every
    /// node. burn-collective starts a node's tensor server without waiting for it to listen, so
    /// without this a node may ask another for a tensor before that one serves (and panic).
    /// `rank` is this node's first peer, for the error when a node is lost meanwhile.
    pub fn all_ready(&self, rank: usize, timeout: Duration, failure: &Failure) -> Result<()> {
        let node_0 = self.waits_for > 0;
        if !node_0 {
            for mut link in self.lock_links().iter() {
                // A broken link is found and named by its watcher.
                let _ = writeln!(link, "ready");
            }
        }
        let wanted = if node_0 { self.waits_for } else { 1 };
        let started = Instant::now();
        while *self.ready.lock().unwrap_or_else(|e| e.into_inner()) < wanted {
            if let Some(what) = failure.get() {
                return Err(TrainError::PeerLost { rank, what });
            }
            if started.elapsed() >= timeout {
                return Err(TrainError::World(format!(
                    "the nodes' tensor servers were not all up within {} s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if node_0 {
            for mut link in self.lock_links().iter() {
                let _ = writeln!(link, "go");
            }
        }
        Ok(())
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

/// A connection to node 0's liveness `port`, retried until `timeout`. When node 0's rendezvous
/// port answers for `grace` while its liveness port does not, node 0 listens elsewhere: it runs
/// with another `--nnodes` (the port depends on it), which is said then, not at the timeout.
fn reach_node_0(nodes: &Nodes, port: u16, timeout: Duration, grace: Duration) -> Result<TcpStream> {
    let (host, rendezvous) = (nodes.master_addr.as_str(), nodes.master_port);
    let started = Instant::now();
    let mut rendezvous_answers_since: Option<Instant> = None;
    let mut probed_at: Option<Instant> = None;
    loop {
        let error = match connect(host, port, Duration::from_secs(5)) {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        if probed_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            let now = Instant::now();
            probed_at = Some(now);
            rendezvous_answers_since = match connect(host, rendezvous, Duration::from_secs(1)) {
                Ok(_) => rendezvous_answers_since.or(Some(now)),
                Err(_) => None,
            };
        }
        let out_of_time = started.elapsed() >= timeout;
        if let Some(since) = rendezvous_answers_since {
            if out_of_time || since.elapsed() >= grace {
                return Err(TrainError::World(format!(
                    "node 0's rendezvous port {host}:{rendezvous} answers, but nothing listens on \
                     {host}:{port}, where node 0 serves the nodes' liveness connections when it \
                     runs with --nnodes {} as this node does (--master-port + 1 + --nnodes): \
                     node 0 likely runs with another --nnodes; start every node with the same \
                     settings",
                    nodes.count
                )));
            }
        }
        if out_of_time {
            return Err(TrainError::World(format!(
                "node 0 cannot be reached at {host}:{port} within {} s: {error} (is node 0 \
                 started, with the same --master-addr, --master-port and --nnodes?)",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A connection to `host:port`, trying each of its addresses for at most `within`.
fn connect(host: &str, port: u16, within: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{host} resolves to no address"),
    );
    for address in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, within) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Tells a connecting node why it is refused (it fails with `what` too).
fn refuse(stream: &TcpStream, what: &str) {
    let _ = writeln!(&*stream, "refused {}", what.replace(['\n', '\r'], " "));
}

/// One line (with its `\n`), at most [`MAX_LINE`] bytes; empty at the end of the stream.
fn read_line(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut bytes)?;
    if !bytes.ends_with(b"\n") && bytes.len() as u64 >= MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {MAX_LINE} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// What a new connection's first line says.
#[derive(Debug, PartialEq)]
enum Hello {
    /// A node speaking this protocol: its rank and settings.
    Node { rank: usize, settings: Settings },
    /// A node of another version of qa: its protocol version (1: the bare `node R`).
    OtherVersion(String),
    /// No node at all.
    Garbage,
}

/// Reads a new connection's hello (waiting at most `wait`), and the connection's reader;
/// `None` when it sends no line.
fn read_hello(stream: &TcpStream, wait: Duration) -> Option<(Hello, BufReader<TcpStream>)> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .ok()?;
    let mut lines = BufReader::new(stream.try_clone().ok()?);
    let line = read_line(&mut lines).ok()?;
    // Watching it blocks until it closes, however long the run.
    stream.set_read_timeout(None).ok()?;
    Some((parse_hello(&line), lines))
}

fn parse_hello(line: &str) -> Hello {
    let line = line.trim_end_matches(['\n', '\r']);
    let mut words = line.splitn(5, ' ');
    match (words.next(), words.next()) {
        (Some("node"), Some(rank)) if rank.parse::<usize>().is_ok() && words.next().is_none() => {
            Hello::OtherVersion("1".into())
        }
        (Some(HELLO), Some(version)) => match version.parse::<u32>() {
            Ok(PROTOCOL) => match (words.next(), words.next(), words.next()) {
                (Some("node"), Some(rank), Some(settings)) => {
                    match (rank.parse(), Settings::from_json(settings)) {
                        (Ok(rank), Some(settings)) => Hello::Node { rank, settings },
                        _ => Hello::Garbage,
                    }
                }
                _ => Hello::Garbage,
            },
            Ok(other) => Hello::OtherVersion(other.to_string()),
            Err(_) => Hello::Garbage,
        },
        _ => Hello::Garbage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(devices: usize, seed: u64) -> Settings {
        Settings::new()
            .with("--nnodes", 2)
            .with("--devices", devices)
            .with("--seed", seed)
    }

    /// Node `rank` of a run of `count` whose liveness port is free (so is the port before it).
    fn nodes(rank: usize, count: usize) -> Nodes {
        loop {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let Some(master_port) = port.checked_sub(1 + count as u16) else {
                continue;
            };
            if TcpListener::bind(("0.0.0.0", port)).is_ok()
                && TcpListener::bind(("0.0.0.0", master_port)).is_ok()
            {
                return Nodes {
                    count,
                    rank,
                    master_addr: "127.0.0.1".into(),
                    master_port,
                    node_addr: "127.0.0.1".into(),
                    data_port: master_port + 1 + rank as u16,
                };
            }
        }
    }

    fn as_node(nodes: &Nodes, rank: usize) -> Nodes {
        Nodes {
            rank,
            ..nodes.clone()
        }
    }

    fn world_error(result: Result<Liveness>) -> String {
        match result {
            Err(TrainError::World(what)) => what,
            Err(e) => panic!("not a World error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn settings_that_differ_are_named_with_both_values() {
        let ours = settings(1, 42);
        assert_eq!(ours.mismatch(1, &settings(1, 42)), None);
        assert_eq!(
            ours.mismatch(1, &settings(2, 42)).unwrap(),
            "node 1 runs with --devices 2 but node 0 with --devices 1: start every node with \
             the same settings"
        );
        assert_eq!(
            ours.mismatch(3, &settings(2, 7)).unwrap(),
            "node 3 runs with --devices 2 and --seed 7 but node 0 with --devices 1 and --seed \
             42: start every node with the same settings"
        );
        // A setting one side lacks (another version of qa) is named too.
        let more = settings(1, 42).with("--max-steps", 4);
        assert!(ours
            .mismatch(1, &more)
            .unwrap()
            .starts_with("node 1 runs with --max-steps 4 but node 0 with no --max-steps"));
        assert!(more
            .mismatch(1, &ours)
            .unwrap()
            .starts_with("node 1 runs with no --max-steps but node 0 with --max-steps 4"));
        // Values stay on one line.
        assert_eq!(Settings::new().with("a", "x\ny").get("a"), Some("x y"));
    }

    #[test]
    fn hellos_name_a_node_of_this_protocol_and_anything_else_is_none() {
        let ours = settings(1, 42);
        let line = format!("{HELLO} {PROTOCOL} node 1 {}\n", ours.to_json());
        assert_eq!(
            parse_hello(&line),
            Hello::Node {
                rank: 1,
                settings: ours
            }
        );
        assert_eq!(parse_hello("node 1\n"), Hello::OtherVersion("1".into()));
        assert_eq!(
            parse_hello("qa-liveness 3 node 1 {}\n"),
            Hello::OtherVersion("3".into())
        );
        for garbage in [
            "",
            "\n",
            "GET / HTTP/1.1\r\n",
            "node one\n",
            "node 1 2\n",
            "qa-liveness\n",
            "qa-liveness two node 1 []\n",
            "qa-liveness 2 node 1\n",
            "qa-liveness 2 node x []\n",
            "qa-liveness 2 node 1 {not json\n",
            "qa-liveness 2 node 1 {\"a\":1}\n",
            "qa-liveness 2 node -1 []\n",
            "qa-liveness 2 nod 1 []\n",
        ] {
            assert_eq!(parse_hello(garbage), Hello::Garbage, "{garbage:?}");
        }
    }

    /// Node 0 of `run` (node 0's settings: 1 device, seed 42), serving on a thread.
    fn serve_in_background(run: &Nodes) -> std::thread::JoinHandle<Result<Liveness>> {
        let run = run.clone();
        std::thread::spawn(move || {
            Liveness::serve(
                &run,
                Duration::from_secs(30),
                Arc::default(),
                &settings(1, 42),
            )
        })
    }

    /// A connection to node 0's liveness port, once it listens (within 10 s).
    fn connect_to_liveness(run: &Nodes) -> TcpStream {
        let port = run.liveness_port().unwrap();
        let started = Instant::now();
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => return stream,
                Err(e) => {
                    assert!(started.elapsed() < Duration::from_secs(10), "{e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    #[test]
    fn a_node_with_other_settings_is_refused_on_both_sides() {
        let run = nodes(0, 2);
        let serving = serve_in_background(&run);
        // A stranger first: dropped, and the run goes on.
        let mut stranger = connect_to_liveness(&run);
        stranger.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut answer = String::new();
        stranger.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "", "a stranger is dropped without a word");

        let joining = Liveness::join(
            &as_node(&run, 1),
            Duration::from_secs(30),
            Arc::default(),
            &settings(2, 42),
        );
        let expected = "node 1 runs with --devices 2 but node 0 with --devices 1: start every \
                        node with the same settings";
        assert_eq!(world_error(joining), expected);
        assert_eq!(world_error(serving.join().unwrap()), expected);
    }

    #[test]
    fn nodes_with_the_same_settings_are_accepted_and_finish() {
        let run = nodes(0, 3);
        let serving = serve_in_background(&run);
        let joining: Vec<_> = [1, 2]
            .map(|rank| {
                let node = as_node(&run, rank);
                std::thread::spawn(move || {
                    Liveness::join(
                        &node,
                        Duration::from_secs(30),
                        Arc::default(),
                        &settings(1, 42),
                    )
                })
            })
            .into_iter()
            .collect();
        let node_0 = serving.join().unwrap().unwrap();
        let others: Vec<_> = joining
            .into_iter()
            .map(|j| j.join().unwrap().unwrap())
            .collect();
        // Nobody goes on before every node is ready.
        let (failure, wait) = (Failure::default(), Duration::from_secs(10));
        std::thread::scope(|scope| {
            let first = scope.spawn(|| node_0.all_ready(0, wait, &failure));
            let one = scope.spawn(|| others[0].all_ready(1, wait, &failure));
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !first.is_finished() && !one.is_finished(),
                "node 2 is not ready yet"
            );
            others[1].all_ready(2, wait, &failure).unwrap();
            first.join().unwrap().unwrap();
            one.join().unwrap().unwrap();
        });
        for other in &others {
            other.finish(Duration::from_secs(5));
        }
        let started = Instant::now();
        node_0.finish(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5), "both said done");
    }

    #[test]
    fn another_protocol_version_is_refused_on_both_sides() {
        let run = nodes(0, 2);
        let serving = serve_in_background(&run);
        let mut old = connect_to_liveness(&run);
        old.write_all(b"node 1\n").unwrap();
        let mut answer = String::new();
        old.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("refused ") && answer.contains("protocol 1 but node 0 protocol 2"),
            "{answer}"
        );
        assert!(world_error(serving.join().unwrap()).contains("run the same version of qa"));
    }

    #[test]
    fn a_node_0_listening_elsewhere_is_said_to_run_with_another_nnodes() {
        // Node 0's rendezvous answers; its liveness port (for another --nnodes) is elsewhere.
        let run = nodes(1, 3);
        let _rendezvous = TcpListener::bind(("0.0.0.0", run.master_port)).unwrap();
        let started = Instant::now();
        let what = world_error(Liveness::join_within(
            &run,
            Duration::from_secs(60),
            Duration::from_secs(1),
            Arc::default(),
            &settings(1, 42),
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            what.contains("nothing listens on")
                && what.contains("node 0 likely runs with another --nnodes"),
            "{what}"
        );
        // Without a rendezvous either, it is a plain timeout.
        let run = nodes(1, 2);
        let what = world_error(Liveness::join(
            &run,
            Duration::from_secs(1),
            Arc::default(),
            &settings(1, 42),
        ));
        assert!(
            what.starts_with("node 0 cannot be reached at 127.0.0.1:"),
            "{what}"
        );
    }
}
