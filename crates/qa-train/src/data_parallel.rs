//! Data-parallel training on Burn's `burn-collective`: where the peers are ([`World`]), one
//! peer's link to the others ([`Peer`]), which windows of a global micro-batch are a peer's
//! ([`Peer::share`]), and the collective operations the trainer needs, each bounded in time:
//! summing a step's gradients and loss ([`Peer::sum_step`]), giving every peer rank 0's weights
//! ([`Peer::broadcast_weights`]) and gathering a sharded evaluation's logits
//! ([`Peer::gather_logits`]). [`train_data_parallel`] runs this node's peers, a thread each.
//!
//! Every operation is one all-reduce *sum* of one flat f32 tensor: burn-collective 0.20 has no
//! broadcast or gather between nodes, and a sum to which all peers but one send zeros is both
//! (exactly: `x + 0 = x`). One flat tensor a step also keeps the operation count at one.

use std::cell::Cell;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use qa_data::Feature;
use qa_model::infer::WindowLogits;
use qa_model::QaModel;

use crate::checkpoint::Fnv1a;
use crate::config::{Schedule, TrainConfig};
use crate::error::{Result, TrainError};
use crate::liveness::{Failure, Liveness, Settings};
use crate::step::StepGradients;
use crate::trainer::{train_as_peer, TrainJob, TrainOutcome};

/// How long a peer waits for the others in one operation: HF `TrainingArguments.ddp_timeout`'s
/// default (30 minutes), as `--ddp-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The machines of a run, as torchrun names them (`--nnodes`, `--node-rank`, `--master-addr`,
/// `--master-port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    pub count: usize,
    pub rank: usize,
    /// Where node 0 runs the orchestrator the nodes meet at.
    pub master_addr: String,
    pub master_port: u16,
    /// This node's address, as the other nodes reach it.
    pub node_addr: String,
    /// The port this node serves its tensors to the other nodes on.
    pub data_port: u16,
}

impl Nodes {
    /// Node 0's port for the nodes' liveness connections: after the default tensor ports.
    pub fn liveness_port(&self) -> Result<u16> {
        u16::try_from(usize::from(self.master_port) + 1 + self.count).map_err(|_| {
            TrainError::World(format!(
                "--master-port {} leaves no room for the liveness port (--master-port + 1 + \
                 --nnodes); choose a lower one",
                self.master_port
            ))
        })
    }
}

/// Every peer of a run: this node's devices, and the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// Peers (devices) on this node.
    pub local_devices: usize,
    /// Several machines; `None`: this one alone.
    pub nodes: Option<Nodes>,
    /// How long a peer waits for the others in one operation before it gives up.
    pub timeout: Duration,
}

impl World {
    /// Peers on this machine only.
    pub fn single_node(local_devices: usize) -> Self {
        Self {
            local_devices,
            nodes: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Peers in all (torch's world size): nodes × devices per node.
    pub fn size(&self) -> usize {
        self.local_devices * self.nodes.as_ref().map_or(1, |n| n.count)
    }

    /// The global rank of this node's first peer.
    fn first_rank(&self) -> usize {
        self.local_devices * self.nodes.as_ref().map_or(0, |n| n.rank)
    }

    fn collective_config(&self) -> Result<CollectiveConfig> {
        let config = CollectiveConfig::default().with_num_devices(self.local_devices);
        let Some(nodes) = &self.nodes else {
            return Ok(config);
        };
        let address = |host: &str, port: u16| {
            format!("ws://{host}:{port}")
                .parse()
                .map_err(|e: String| TrainError::World(format!("bad address {host}:{port}: {e}")))
        };
        Ok(config
            .with_num_nodes(nodes.count as u32)
            .with_global_address(address(&nodes.master_addr, nodes.master_port)?)
            .with_node_address(address(&nodes.node_addr, nodes.data_port)?)
            .with_data_service_port(nodes.data_port))
    }

    /// Who a peer waits for, for timeout messages.
    fn waited_for(&self) -> String {
        match &self.nodes {
            None => String::new(),
            Some(n) => format!(
                " (this is node {} of {}; the nodes meet at {}:{}, this node serves tensors on \
                 {}:{})",
                n.rank, n.count, n.master_addr, n.master_port, n.node_addr, n.data_port
            ),
        }
    }
}

/// One peer of a run: its rank, and its link to the others (none when it is alone).
pub struct Peer {
    pub rank: usize,
    pub world_size: usize,
    link: Option<Link>,
    /// Time spent in collective operations (waiting included): the data-parallel overhead.
    collective_time: Cell<Duration>,
}

struct Link {
    id: PeerId,
    timeout: Duration,
    failure: Arc<Failure>,
    waited_for: String,
}

impl Peer {
    /// The only peer of a one-device run: every collective operation is the identity.
    pub fn alone() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            link: None,
            collective_time: Cell::new(Duration::ZERO),
        }
    }

    /// Rank 0: the peer that logs and writes files.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Seconds spent in collective operations so far.
    pub fn collective_seconds(&self) -> f64 {
        self.collective_time.get().as_secs_f64()
    }

    /// Registers local peer `local_index` of `world` on `device` and waits for every peer.
    fn join<B: Backend>(
        world: &World,
        local_index: usize,
        device: &B::Device,
        failure: Arc<Failure>,
    ) -> Result<Self> {
        let rank = world.first_rank() + local_index;
        let peer = Self {
            rank,
            world_size: world.size(),
            link: Some(Link {
                id: PeerId::from(rank),
                timeout: world.timeout,
                failure,
                waited_for: world.waited_for(),
            }),
            collective_time: Cell::new(Duration::ZERO),
        };
        let config = world.collective_config()?;
        let (id, device) = (PeerId::from(rank), device.clone());
        peer.call("joining the other peers", move || {
            burn_collective::register::<B>(id, device, config)
        })?;
        Ok(peer)
    }

    /// Leaves the collective once every peer has reached the end (a last all-reduce), so no
    /// peer's process ends while another still needs it.
    fn leave<B: Backend>(&self, device: &B::Device) -> Result<()> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        // As long as the world: a ring all-reduce cuts the tensor into one slice per node.
        self.sum::<B>(
            Tensor::zeros([self.world_size], device),
            "the end of the run",
        )?;
        let id = link.id;
        // Node 0's orchestrator may already be gone when another node says goodbye: any answer
        // after the last all-reduce is fine.
        if let Err(e) = self.call("leaving", move || {
            burn_collective::finish_collective::<B>(id)
        }) {
            tracing::debug!("peer {}: {e}", self.rank);
        }
        Ok(())
    }

    /// The positions in a global micro-batch of `len` windows that are this peer's: `rank`,
    /// `rank + world_size`, ..., as torch's `DistributedSampler` deals them.
    pub fn share(&self, len: usize) -> Vec<usize> {
        (self.rank..len).step_by(self.world_size).collect()
    }

    /// Runs one collective operation on a thread of its own and waits for it, at most the
    /// timeout, and no longer than until another local peer fails.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        operation: impl FnOnce() -> std::result::Result<T, CollectiveError> + Send + 'static,
    ) -> Result<T> {
        let link = self
            .link
            .as_ref()
            .expect("only linked peers call the others");
        let started = Instant::now();
        let (answer, answered) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("qa-collective-{}", self.rank))
            .spawn(move || {
                let _ = answer.send(operation());
            })
            .map_err(|e| TrainError::World(format!("cannot start a thread: {e}")))?;
        let outcome = loop {
            match answered.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(value)) => break Ok(value),
                Ok(Err(e)) => break Err(self.broken(op, format!("{e:?}"))),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(self.broken(op, "the operation's thread died".into()))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(what) = link.failure.get() {
                        break Err(TrainError::PeerLost {
                            rank: self.rank,
                            what,
                        });
                    }
                    if started.elapsed() >= link.timeout {
                        break Err(TrainError::CollectiveTimeout {
                            rank: self.rank,
                            op,
                            seconds: link.timeout.as_secs(),
                            hint: link.waited_for.clone(),
                        });
                    }
                }
            }
        };
        self.collective_time
            .set(self.collective_time.get() + started.elapsed());
        outcome
    }

    /// The error of an operation that broke: a lost peer's name when one is learnt within a
    /// moment (a dead node breaks the all-reduce before its socket's close is read), else what
    /// the collective said.
    fn broken(&self, op: &'static str, what: String) -> TrainError {
        let link = self
            .link
            .as_ref()
            .expect("only linked peers call the others");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            if let Some(lost) = link.failure.get() {
                return TrainError::PeerLost {
                    rank: self.rank,
                    what: lost,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        TrainError::Collective {
            rank: self.rank,
            op,
            what,
        }
    }

    /// The element-wise sum of `tensor` over all peers (the tensor itself when alone).
    fn sum<B: Backend>(&self, tensor: Tensor<B, 1>, op: &'static str) -> Result<Tensor<B, 1>> {
        let Some(link) = &self.link else {
            return Ok(tensor);
        };
        let (id, primitive) = (link.id, tensor.into_primitive().tensor());
        let summed = self.call(op, move || {
            burn_collective::all_reduce::<B>(id, primitive, ReduceOperation::Sum)
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// Checks that every peer starts at `global_step` as this one does: a resume read by some
    /// peers only (nodes without a shared output folder) would otherwise pair unrelated
    /// operations.
    pub fn check_same_start<B: Backend>(
        &self,
        global_step: usize,
        device: &B::Device,
    ) -> Result<()> {
        if self.link.is_none() {
            return Ok(());
        }
        // Each peer writes its step + 1 at its rank; the sum is every peer's.
        let mut mine = vec![0f32; self.world_size];
        mine[self.rank] = (global_step + 1) as f32;
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(mine, [self.world_size]), device);
        let all: Vec<f32> = self
            .sum(tensor, "agreeing where to start")?
            .into_data()
            .into_vec()
            .expect("f32 steps");
        let steps: Vec<i64> = all.iter().map(|&s| s as i64 - 1).collect();
        if steps.iter().any(|&s| s != global_step as i64) {
            return Err(TrainError::World(format!(
                "the peers start at different steps (by rank: {steps:?}): to resume, every node \
                 must read the same --output-dir (a shared filesystem) and checkpoint"
            )));
        }
        Ok(())
    }

    /// The step's gradients, loss and window count summed over all peers. Each peer's loss is
    /// weighted by its share of the windows ([`crate::step::MicroBatch::share`]), so the sum is
    /// the gradient of the mean loss over the global batch: what one device would compute.
    pub fn sum_step<AB: AutodiffBackend>(
        &self,
        model: &QaModel<AB>,
        step: StepGradients,
    ) -> Result<StepGradients> {
        if self.link.is_none() {
            return Ok(step);
        }
        let mut flatten = FlattenGradients::<AB> {
            grads: step.grads,
            parts: Vec::new(),
            present: Vec::new(),
        };
        model.visit(&mut flatten);
        let device = flatten.parts[0].device();
        let numel: usize = flatten.parts.iter().map(|p| p.dims()[0]).sum();
        // After the gradients: the loss, the windows, and which parameters had a gradient (a
        // peer without windows in the step has none).
        let mut tail = vec![step.loss as f32, step.windows as f32];
        tail.extend(&flatten.present);
        let tail_len = tail.len();
        flatten.parts.push(Tensor::from_data(
            TensorData::new(tail, [tail_len]),
            &device,
        ));
        let summed = self.sum(Tensor::cat(flatten.parts, 0), "summing gradients")?;
        let tail: Vec<f32> = summed
            .clone()
            .narrow(0, numel, tail_len)
            .into_data()
            .into_vec()
            .expect("f32 sums");
        let mut split = SplitGradients::<AB> {
            flat: summed,
            offset: 0,
            present: tail[2..].iter().map(|&p| p > 0.0).collect(),
            index: 0,
            grads: GradientsParams::new(),
        };
        model.visit(&mut split);
        Ok(StepGradients {
            grads: split.grads,
            loss: f64::from(tail[0]),
            windows: tail[1].round() as usize,
        })
    }

    /// `model` with rank 0's weights, on every peer.
    pub fn broadcast_weights<AB: AutodiffBackend>(
        &self,
        model: QaModel<AB>,
    ) -> Result<QaModel<AB>> {
        if self.link.is_none() {
            return Ok(model);
        }
        let mut values = WeightValues::<AB> {
            parts: Vec::new(),
            send: self.is_main(),
        };
        model.visit(&mut values);
        let flat = self.sum(Tensor::cat(values.parts, 0), "sending rank 0's weights")?;
        Ok(model.map(&mut AssignWeights::<AB> { flat, offset: 0 }))
    }

    /// Every window's logits, from each peer's logits of its own windows (`mine`: window index
    /// and logits). `features` are all the windows, in order.
    pub fn gather_logits<B: Backend>(
        &self,
        features: &[Feature],
        mine: Vec<(usize, WindowLogits)>,
        device: &B::Device,
    ) -> Result<Vec<WindowLogits>> {
        let offsets: Vec<usize> = features
            .iter()
            .scan(0, |at, f| {
                let start = *at;
                *at += 2 * f.len();
                Some(start)
            })
            .collect();
        let total = features.iter().map(|f| 2 * f.len()).sum::<usize>();
        let mut flat = vec![0f32; total];
        for (i, (start, end)) in mine {
            let (at, n) = (offsets[i], features[i].len());
            assert!(
                start.len() == n && end.len() == n,
                "window {i}: logits for {}/{} positions, the window has {n}",
                start.len(),
                end.len()
            );
            flat[at..at + n].copy_from_slice(&start);
            flat[at + n..at + 2 * n].copy_from_slice(&end);
        }
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(flat, [total]), device);
        let all: Vec<f32> = self
            .sum(tensor, "gathering evaluation logits")?
            .into_data()
            .into_vec()
            .expect("f32 logits");
        Ok(features
            .iter()
            .zip(offsets)
            .map(|(f, at)| {
                let n = f.len();
                (all[at..at + n].to_vec(), all[at + n..at + 2 * n].to_vec())
            })
            .collect())
    }
}

/// Each parameter's gradient (zeros where it has none), flattened, in module walk order: the
/// same order on every peer, whatever ids the parameters were given.
struct FlattenGradients<AB: AutodiffBackend> {
    grads: GradientsParams,
    parts: Vec<Tensor<AB::InnerBackend, 1>>,
    present: Vec<f32>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for FlattenGradients<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        let (part, present) = match self.grads.remove::<AB::InnerBackend, D>(param.id) {
            Some(grad) => (grad.reshape([n]), 1.0),
            None => (Tensor::zeros([n], &value.device()), 0.0),
        };
        self.parts.push(part);
        self.present.push(present);
    }
}

/// The inverse of [`FlattenGradients`]: the summed gradients back under this peer's ids.
struct SplitGradients<AB: AutodiffBackend> {
    flat: Tensor<AB::InnerBackend, 1>,
    offset: usize,
    /// Whether any peer had a gradient for each parameter, in walk order.
    present: Vec<bool>,
    index: usize,
    grads: GradientsParams,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for SplitGradients<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let dims = param.val().dims();
        let n: usize = dims.iter().product();
        if self.present[self.index] {
            let part = self.flat.clone().narrow(0, self.offset, n);
            self.grads
                .register::<AB::InnerBackend, D>(param.id, part.reshape(dims));
        }
        self.offset += n;
        self.index += 1;
    }
}

/// Every weight flattened in walk order (rank 0), or zeros of the same size (other ranks).
struct WeightValues<AB: AutodiffBackend> {
    parts: Vec<Tensor<AB::InnerBackend, 1>>,
    send: bool,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for WeightValues<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let value = param.val().inner();
        let n = value.shape().num_elements();
        self.parts.push(if self.send {
            value.reshape([n])
        } else {
            Tensor::zeros([n], &value.device())
        });
    }
}

/// Sets every weight from a flat tensor in walk order (the inverse of [`WeightValues`]).
struct AssignWeights<AB: AutodiffBackend> {
    flat: Tensor<AB::InnerBackend, 1>,
    offset: usize,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for AssignWeights<AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let value = self.flat.clone().narrow(0, self.offset, n);
        self.offset += n;
        let trainable = tensor.is_require_grad();
        let value = Tensor::<AB, D>::from_inner(value.reshape(dims));
        let value = if trainable {
            value.require_grad()
        } else {
            value
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Starts node 0's orchestrator, the rendezvous of the nodes, on a runtime of its own.
/// Its end (it only logs what went wrong) is a failure of the run.
fn start_orchestrator(port: u16, failure: Arc<Failure>) -> Result<()> {
    // A port in use is refused now, not found out at the timeout.
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        TrainError::World(format!(
            "cannot serve the nodes' rendezvous on --master-port {port}: {e}"
        ))
    })?;
    std::thread::Builder::new()
        .name("qa-orchestrator".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    runtime.block_on(burn_collective::start_global_orchestrator(port));
                    failure.mark(format!(
                        "the nodes' orchestrator on port {port} stopped (see the log above)"
                    ));
                }
                Err(e) => failure.mark(format!("the nodes' orchestrator cannot start: {e}")),
            }
        })
        .map_err(|e| TrainError::World(format!("cannot start the orchestrator: {e}")))?;
    Ok(())
}

/// Trains with one peer per device of `devices` (this node's share of `world`), each on a thread
/// of this process, with `load_model` giving each its starting model. Rank 0 alone logs and
/// writes files. Returns this node's first peer's outcome: the trained model (rank 0's has the
/// best checkpoint's weights instead when `load_best_model_at_end`).
pub fn train_data_parallel<B: AutodiffBackend>(
    load_model: impl Fn(&B::Device) -> Result<QaModel<B>> + Sync,
    job: &TrainJob,
    cfg: &TrainConfig,
    devices: &[B::Device],
    world: &World,
) -> Result<TrainOutcome<B>> {
    if devices.len() != world.local_devices || devices.is_empty() {
        return Err(TrainError::World(format!(
            "{} device(s) given for {} local peer(s)",
            devices.len(),
            world.local_devices
        )));
    }
    if world.size() == 1 {
        let device = &devices[0];
        return train_as_peer(load_model(device)?, job, cfg, device, &Peer::alone());
    }
    let failure = Arc::new(Failure::default());
    let liveness = match &world.nodes {
        Some(nodes) => Some(meet_the_nodes(
            nodes,
            world.timeout,
            &failure,
            &run_settings(world, job, cfg),
        )?),
        None => None,
    };
    tracing::info!(
        "data-parallel training: world size {} ({} node(s) × {} device(s)), global batch {} = \
         {} per device × {} × accumulation {}",
        world.size(),
        world.nodes.as_ref().map_or(1, |n| n.count),
        world.local_devices,
        cfg.per_device_train_batch_size * world.size() * cfg.gradient_accumulation_steps,
        cfg.per_device_train_batch_size,
        world.size(),
        cfg.gradient_accumulation_steps
    );
    // A process runs one collective at a time: forget any earlier run's peers.
    burn_collective::reset_collective::<B::InnerBackend>();
    let run_peer = |local_index: usize, device: &B::Device| -> Result<TrainOutcome<B>> {
        let peer = Peer::join::<B::InnerBackend>(world, local_index, device, failure.clone())?;
        // One peer a node waits for every node's tensor server before the first operation
        // (this node's other peers wait for it inside that operation).
        if let (0, Some(nodes), Some(liveness)) = (local_index, &world.nodes, &liveness) {
            wait_for_tensor_server(nodes.data_port, world.timeout)?;
            liveness.all_ready(peer.rank, world.timeout, &failure)?;
        }
        let outcome = train_as_peer(load_model(device)?, job, cfg, device, &peer)?;
        peer.leave::<B::InnerBackend>(device)?;
        Ok(outcome)
    };
    let outcomes: Vec<Result<TrainOutcome<B>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, device)| {
                let failure = failure.clone();
                let run_peer = &run_peer;
                scope.spawn(move || {
                    let rank = world.first_rank() + i;
                    // A panicking peer counts as failed too, so the others do not wait for it.
                    let guard = MarkIfPanicking { failure, rank };
                    let outcome = run_peer(i, device);
                    if let Err(e) = &outcome {
                        guard.failure.mark(format!("peer {rank} failed: {e}"));
                    }
                    outcome
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, handle)| {
                handle.join().unwrap_or_else(|payload| {
                    let what = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(TrainError::World(format!(
                        "peer {} panicked: {what}",
                        world.first_rank() + i
                    )))
                })
            })
            .collect()
    });
    // The first failure that is not "another peer was lost" is the cause.
    let mut cause = None;
    let mut first_outcome = None;
    for outcome in outcomes {
        match outcome {
            Ok(o) => {
                first_outcome.get_or_insert(o);
            }
            Err(e) => {
                if matches!(cause, None | Some(TrainError::PeerLost { .. })) {
                    cause = Some(e);
                }
            }
        }
    }
    match (cause, first_outcome) {
        (Some(e), _) => Err(e),
        (None, Some(outcome)) => {
            if let Some(liveness) = liveness {
                liveness.finish(Duration::from_secs(30));
            }
            Ok(outcome)
        }
        (None, None) => unreachable!("at least one device, checked above"),
    }
}

/// Sets this node up to meet the others: its tensor port free, node 0's orchestrator running,
/// and the liveness connections made (node 0 waits for every node here), each node's
/// `settings` agreeing with node 0's: before any tensor travels, so that nodes started with
/// other settings are refused rather than pairing unrelated operations.
fn meet_the_nodes(
    nodes: &Nodes,
    timeout: Duration,
    failure: &Arc<Failure>,
    settings: &Settings,
) -> Result<Liveness> {
    if nodes.rank >= nodes.count {
        return Err(TrainError::World(format!(
            "--node-rank {} is not below --nnodes {}",
            nodes.rank, nodes.count
        )));
    }
    std::net::TcpListener::bind(("0.0.0.0", nodes.data_port)).map_err(|e| {
        TrainError::World(format!(
            "cannot serve this node's tensors on port {}: {e}",
            nodes.data_port
        ))
    })?;
    // A --master-port with no room for the liveness port is refused before anything starts.
    nodes.liveness_port()?;
    if nodes.rank == 0 {
        start_orchestrator(nodes.master_port, failure.clone())?;
        Liveness::serve(nodes, timeout, failure.clone(), settings)
    } else {
        Liveness::join(nodes, timeout, failure.clone(), settings)
    }
}

/// What every node of a run must agree on: the settings that make peers compute other steps,
/// another number of them, or pair unrelated collective operations (a different world, data,
/// model, schedule or optimizer). Each is named as the user sets it.
fn run_settings(world: &World, job: &TrainJob, cfg: &TrainConfig) -> Settings {
    let windows = |count: usize, fingerprint: qa_data::Result<u64>| match fingerprint {
        Ok(hash) => format!("{count} (fingerprint {hash:016x})"),
        Err(e) => format!("{count} (unreadable: {e})"),
    };
    let unset = |value: Option<usize>| value.map_or("unset".to_string(), |n| n.to_string());
    let schedule = |schedule: std::result::Result<Schedule, _>| match schedule {
        Ok(Schedule::Never) => "no".to_string(),
        Ok(Schedule::EverySteps(n)) => format!("steps {n}"),
        Ok(Schedule::EachEpoch) => "epoch".to_string(),
        Err(e) => format!("invalid ({e})"),
    };
    let loss_scaling = match cfg.loss_scaling() {
        None => "off".to_string(),
        Some(s) => format!(
            "init {} growth {} backoff {} interval {}",
            s.init_scale, s.growth_factor, s.backoff_factor, s.growth_interval
        ),
    };
    let model = job.model_config;
    Settings::new()
        .with("--nnodes", world.nodes.as_ref().map_or(1, |n| n.count))
        .with("--devices", world.local_devices)
        .with(
            "training windows",
            windows(job.train_features.len(), job.train_features.fingerprint()),
        )
        .with(
            "evaluation windows",
            job.eval.map_or("none".to_string(), |eval| {
                windows(eval.features.len(), eval.features.fingerprint())
            }),
        )
        .with(
            "model",
            format!(
                "{} of {} parameters (config fingerprint {:016x})",
                model
                    .hf
                    .get("model_type")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("unknown"),
                model.parameter_count(),
                model_fingerprint(&model.hf)
            ),
        )
        .with(
            "--per-device-train-batch-size",
            cfg.per_device_train_batch_size,
        )
        .with(
            "--gradient-accumulation-steps",
            cfg.gradient_accumulation_steps,
        )
        .with("--num-train-epochs", cfg.num_train_epochs)
        .with("--max-steps", unset(cfg.max_steps()))
        .with("--seed", cfg.seed)
        .with("--learning-rate", cfg.learning_rate)
        .with(
            "--lr-scheduler-type",
            serde_json::to_value(cfg.lr_scheduler_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", cfg.lr_scheduler_type)),
        )
        .with("--warmup-ratio", cfg.warmup_ratio)
        .with("--warmup-steps", unset(cfg.warmup_steps))
        .with("--weight-decay", cfg.weight_decay)
        .with("--adam-beta1", cfg.adam_beta1)
        .with("--adam-beta2", cfg.adam_beta2)
        .with("--adam-epsilon", cfg.adam_epsilon)
        .with("--max-grad-norm", cfg.max_grad_norm)
        .with("precision", format!("{:?}", cfg.precision).to_lowercase())
        .with("loss scaling", loss_scaling)
        .with("--eval-strategy", schedule(cfg.eval_schedule()))
}

/// A stable hash of a model's `config.json` (FNV-1a of its canonical JSON: keys sorted, the
/// bookkeeping keys `_name_or_path`, `transformers_version` and other `_…` left out).
fn model_fingerprint(hf: &serde_json::Value) -> u64 {
    fn canonical(value: &serde_json::Value, top: bool, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map
                    .keys()
                    .filter(|k| !top || !(k.starts_with('_') || *k == "transformers_version"))
                    .collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                    out.push(':');
                    canonical(&map[key], false, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, false, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(hf, true, &mut text);
    let mut hash = Fnv1a::new();
    hash.write(text.as_bytes());
    hash.finish()
}

/// Waits (at most `timeout`) until this node's tensor server, which burn-collective starts
/// without waiting for it to listen, accepts connections.
fn wait_for_tensor_server(port: u16, timeout: Duration) -> Result<()> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() >= timeout => {
                return Err(TrainError::World(format!(
                    "this node's tensor server on port {port} did not start within {} s: {e}",
                    timeout.as_secs()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Marks its peer failed when dropped during a panic.
struct MarkIfPanicking {
    failure: Arc<Failure>,
    rank: usize,
}

impl Drop for MarkIfPanicking {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.failure.mark(format!("peer {} panicked", self.rank));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_deal_windows_like_distributed_sampler() {
        let peer = |rank| Peer {
            rank,
            world_size: 3,
            link: None,
            collective_time: Cell::new(Duration::ZERO),
        };
        assert_eq!(peer(0).share(7), vec![0, 3, 6]);
        assert_eq!(peer(1).share(7), vec![1, 4]);
        assert_eq!(peer(2).share(7), vec![2, 5]);
        assert_eq!(peer(2).share(2), Vec::<usize>::new());
        assert_eq!(Peer::alone().share(3), vec![0, 1, 2]);
    }

    #[test]
    fn world_size_and_ranks_follow_torchrun() {
        let nodes = |rank| Nodes {
            count: 2,
            rank,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            node_addr: "127.0.0.1".into(),
            data_port: 29501,
        };
        let world = World {
            local_devices: 4,
            nodes: Some(nodes(1)),
            timeout: DEFAULT_TIMEOUT,
        };
        assert_eq!(world.size(), 8);
        assert_eq!(world.first_rank(), 4);
        assert_eq!(World::single_node(2).size(), 2);
        assert_eq!(World::single_node(2).first_rank(), 0);
        assert!(world.collective_config().unwrap().is_valid());
    }

    fn window(ids: &[u32], start: usize) -> Feature {
        let n = ids.len();
        Feature {
            example_index: 0,
            window: 0,
            input_ids: ids.to_vec(),
            token_type_ids: vec![0; n],
            attention_mask: vec![1; n],
            offsets: vec![None; n],
            max_context: vec![true; n],
            word_ids: Vec::new(),
            start_position: start,
            end_position: start,
        }
    }

    fn tiny_bert(hidden_act: &str) -> qa_model::ModelConfig {
        qa_model::ModelConfig::from_hf(serde_json::json!({
            "_name_or_path": "/somewhere/tiny",
            "model_type": "bert",
            "hidden_act": hidden_act,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
            "vocab_size": 100,
        }))
        .unwrap()
    }

    #[test]
    fn nodes_started_with_other_settings_are_told_which() {
        let model = tiny_bert("gelu");
        let features = vec![window(&[101, 7, 102], 1), window(&[101, 8, 102], 0)];
        let world = |devices, count| World {
            local_devices: devices,
            nodes: Some(Nodes {
                count,
                rank: 0,
                master_addr: "127.0.0.1".into(),
                master_port: 29500,
                node_addr: "127.0.0.1".into(),
                data_port: 29501,
            }),
            timeout: DEFAULT_TIMEOUT,
        };
        let job = |model, features| TrainJob {
            model_config: model,
            tokenizer_dir: None,
            train_features: features,
            eval: None,
            card: None,
        };
        let cfg = TrainConfig::new("out");
        let ours = run_settings(&world(1, 2), &job(&model, &features), &cfg);
        assert_eq!(
            run_settings(&world(1, 2), &job(&model, &features), &cfg.clone()),
            ours,
            "the same settings, however the node sees its own paths"
        );
        // Another path to the same config is the same model.
        let elsewhere = qa_model::ModelConfig {
            hf: {
                let mut hf = model.hf.clone();
                hf["_name_or_path"] = "/elsewhere/tiny".into();
                hf["transformers_version"] = "9.9.9".into();
                hf
            },
            ..model.clone()
        };
        assert_eq!(
            run_settings(&world(1, 2), &job(&elsewhere, &features), &cfg),
            ours
        );
        let refused = |theirs: Settings| ours.mismatch(1, &theirs).expect("refused");
        let with_cfg = |change: &dyn Fn(&mut TrainConfig)| {
            let mut theirs = cfg.clone();
            change(&mut theirs);
            refused(run_settings(&world(1, 2), &job(&model, &features), &theirs))
        };
        let same = "start every node with the same settings";
        let check = |what: String, theirs: &str, ours: &str| {
            assert_eq!(
                what,
                format!("node 1 runs with {theirs} but node 0 with {ours}: {same}")
            );
        };
        check(
            refused(run_settings(&world(2, 2), &job(&model, &features), &cfg)),
            "--devices 2",
            "--devices 1",
        );
        check(
            refused(run_settings(&world(1, 3), &job(&model, &features), &cfg)),
            "--nnodes 3",
            "--nnodes 2",
        );
        let first = features[..1].to_vec();
        let fewer = refused(run_settings(&world(1, 2), &job(&model, &first), &cfg));
        assert!(
            fewer.starts_with("node 1 runs with training windows 1 (fingerprint ")
                && fewer.contains("but node 0 with training windows 2 (fingerprint "),
            "{fewer}"
        );
        let other = vec![window(&[101, 7, 102], 1), window(&[101, 9, 102], 0)];
        let other = refused(run_settings(&world(1, 2), &job(&model, &other), &cfg));
        assert!(
            other.starts_with("node 1 runs with training windows 2 (fingerprint "),
            "{other}"
        );
        let other_act = tiny_bert("gelu_new");
        let other_act = refused(run_settings(
            &world(1, 2),
            &job(&other_act, &features),
            &cfg,
        ));
        assert!(
            other_act.starts_with("node 1 runs with model bert of ")
                && other_act.contains(" parameters (config fingerprint "),
            "{other_act}"
        );
        check(
            with_cfg(&|c| c.per_device_train_batch_size = 2),
            "--per-device-train-batch-size 2",
            "--per-device-train-batch-size 8",
        );
        check(
            with_cfg(&|c| c.gradient_accumulation_steps = 4),
            "--gradient-accumulation-steps 4",
            "--gradient-accumulation-steps 1",
        );
        check(
            with_cfg(&|c| c.num_train_epochs = 2.5),
            "--num-train-epochs 2.5",
            "--num-train-epochs 3",
        );
        check(
            with_cfg(&|c| c.max_steps = Some(10)),
            "--max-steps 10",
            "--max-steps unset",
        );
        check(with_cfg(&|c| c.seed = 7), "--seed 7", "--seed 42");
        check(
            with_cfg(&|c| c.learning_rate = 3e-5),
            "--learning-rate 0.00003",
            "--learning-rate 0.00005",
        );
        check(
            with_cfg(&|c| c.weight_decay = 0.01),
            "--weight-decay 0.01",
            "--weight-decay 0",
        );
        check(
            with_cfg(&|c| c.warmup_ratio = 0.1),
            "--warmup-ratio 0.1",
            "--warmup-ratio 0",
        );
        check(
            with_cfg(&|c| c.warmup_steps = Some(5)),
            "--warmup-steps 5",
            "--warmup-steps unset",
        );
        check(
            with_cfg(&|c| c.lr_scheduler_type = crate::optim::LrScheduler::ConstantWithWarmup),
            "--lr-scheduler-type constant_with_warmup",
            "--lr-scheduler-type linear",
        );
        check(
            with_cfg(&|c| c.adam_epsilon = 1.0),
            "--adam-epsilon 1",
            "--adam-epsilon 0.00000001",
        );
        check(
            with_cfg(&|c| c.max_grad_norm = 0.0),
            "--max-grad-norm 0",
            "--max-grad-norm 1",
        );
        check(
            with_cfg(&|c| c.eval_steps = Some(5)),
            "--eval-strategy steps 5",
            "--eval-strategy no",
        );
        let bf16 = with_cfg(&|c| c.precision = crate::config::Precision::Bf16);
        check(bf16, "precision bf16", "precision f32");
        let fp16 = with_cfg(&|c| c.precision = crate::config::Precision::Fp16);
        assert!(
            fp16.starts_with("node 1 runs with precision fp16 and loss scaling init ")
                && fp16.contains("but node 0 with precision f32 and loss scaling off"),
            "{fp16}"
        );
        // Settings that change no step on any peer are no reason to refuse a node.
        let theirs = TrainConfig {
            logging_steps: 1,
            per_device_eval_batch_size: 64,
            save_steps: Some(3),
            ..TrainConfig::new("elsewhere")
        };
        assert_eq!(
            run_settings(&world(1, 2), &job(&model, &features), &theirs),
            ours
        );
    }
}
