//! `qa train`: fine-tune a model, as `run_qa.py --do_train --do_eval`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use qa_data::tokenizer::pad_token_id;
use qa_data::{load_tokenizer, FeatureConfig};
use qa_eval::evaluate::warn_if_v2_decoded_as_v1;
use qa_model::backend::Device;
use qa_model::backend::Train;
use qa_train::{EvalSet, Nodes, Precision, TrainConfig, TrainJob, World};

use qa_data::hub::Split;
use qa_data::{DataSource, TrainWindows, WindowSource, Windows};
use qa_train::{CardFacts, Origin};

use crate::common::{self, CacheArgs, DataArgs, DatasetArgs, DecodeArgs, RevisionArg, WindowArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Model to start from (a base encoder or a QA checkpoint): a local Hugging Face folder or
    /// a Hub id (org/name).
    #[arg(long)]
    model_name_or_path: String,
    #[command(flatten)]
    revision: RevisionArg,
    #[arg(long, required_unless_present = "dataset_name")]
    train_file: Option<PathBuf>,
    /// Labelled data to evaluate on (on the --eval-strategy schedule and at the end); with
    /// --dataset-name, its validation split when it has one.
    #[arg(long)]
    validation_file: Option<PathBuf>,
    /// Or a Hub dataset: its train split (and validation split) instead of files.
    #[command(flatten)]
    dataset: DatasetArgs,
    #[command(flatten)]
    windows: WindowArgs,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    decode: DecodeArgs,
    #[command(flatten)]
    training: TrainConfig,
    #[arg(long)]
    max_train_samples: Option<usize>,
    /// Which training windows to learn from: `all` (run_qa) or `with-answer` (only windows
    /// holding their answer; the CPU slice of `cargo xtask reproduce` uses it).
    #[arg(long, default_value_t = TrainWindows::All)]
    train_windows: TrainWindows,
    #[arg(long)]
    max_eval_samples: Option<usize>,
    /// bf16 mixed precision (CUDA).
    #[arg(long, conflicts_with = "fp16")]
    bf16: bool,
    /// fp16 mixed precision with dynamic loss scaling (CUDA).
    #[arg(long)]
    fp16: bool,
    #[command(flatten)]
    tf32: common::Tf32Arg,
    /// cpu, cuda or cuda:N (must match how `qa` was built).
    #[arg(long, default_value = "auto", conflicts_with = "devices")]
    device: String,
    #[command(flatten)]
    distributed: DistributedArgs,
}

/// Data-parallel training: several devices of this machine, and several machines (torchrun's
/// flag names).
#[derive(clap::Args)]
struct DistributedArgs {
    /// One peer per device, in this process: `cuda:0,cuda:1,...` (`cpu,cpu` on the CPU
    /// build). Each reads --per-device-train-batch-size windows of every global batch.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// Machines in the run; each runs `qa train` with the same flags and its own --node-rank.
    #[arg(long, env = "NNODES", default_value_t = 1)]
    nnodes: usize,
    /// This machine's place in the run, 0 to --nnodes − 1; node 0 hosts the rendezvous.
    #[arg(long, env = "NODE_RANK", default_value_t = 0)]
    node_rank: usize,
    /// Where node 0 runs the rendezvous the nodes meet at.
    #[arg(long, env = "MASTER_ADDR", default_value = "127.0.0.1")]
    master_addr: String,
    /// The rendezvous port on node 0 (node 0 also listens on this + 1 + --nnodes, for the
    /// other nodes' liveness connections).
    #[arg(long, env = "MASTER_PORT", default_value_t = 29500)]
    master_port: u16,
    /// This machine's address as the other nodes reach it [default: --master-addr on node 0,
    /// required on the others unless the master address is a loopback one].
    #[arg(long)]
    node_addr: Option<String>,
    /// The port this node serves its tensors to the other nodes on [default: --master-port +
    /// 1 + --node-rank].
    #[arg(long)]
    node_port: Option<u16>,
    /// Seconds a peer waits for the others in one operation before it stops with an error
    /// (HF's `ddp_timeout`).
    #[arg(long, default_value_t = 1800)]
    ddp_timeout: u64,
}

impl DistributedArgs {
    /// The run's peers, and this node's devices.
    fn world(&self, single_device: &str) -> anyhow::Result<(World, Vec<Device>)> {
        let specs = match self.devices.as_slice() {
            [] => vec![single_device.to_string()],
            specs => specs.to_vec(),
        };
        let devices = specs
            .iter()
            .map(|spec| common::device(spec))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.nnodes == 0 || self.node_rank >= self.nnodes {
            bail!(
                "--node-rank {} must be below --nnodes {} (counted from 0)",
                self.node_rank,
                self.nnodes
            );
        }
        let nodes = if self.nnodes > 1 {
            let loopback = self
                .master_addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
                || self.master_addr == "localhost";
            let node_addr = match (&self.node_addr, self.node_rank, loopback) {
                (Some(addr), _, _) => addr.clone(),
                (None, 0, _) | (None, _, true) => self.master_addr.clone(),
                (None, _, false) => bail!(
                    "--node-addr is needed on node {}: the address the other nodes reach this \
                     machine at",
                    self.node_rank
                ),
            };
            let data_port = match self.node_port {
                Some(port) => port,
                None => u16::try_from(usize::from(self.master_port) + 1 + self.node_rank)
                    .context("--master-port + 1 + --node-rank is past 65535: give --node-port")?,
            };
            Some(Nodes {
                count: self.nnodes,
                rank: self.node_rank,
                master_addr: self.master_addr.clone(),
                master_port: self.master_port,
                node_addr,
                data_port,
            })
        } else {
            None
        };
        let world = World {
            local_devices: devices.len(),
            nodes,
            timeout: std::time::Duration::from_secs(self.ddp_timeout.max(1)),
        };
        Ok((world, devices))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.tf32.apply()?;
    let (world, devices) = args.distributed.world(&args.device)?;
    let device = &devices[0];
    let model_dir = common::model_dir(&args.model_name_or_path, &args.revision)?;
    let dataset = args.dataset.resolve(&[Split::Train, Split::Validation])?;
    let train_source = match (&args.train_file, &dataset) {
        (Some(path), _) => DataSource::Path(path.clone()),
        (None, Some(files)) => common::split_source(files, Split::Train)?,
        (None, None) => bail!("give --train-file FILE or --dataset-name NAME"),
    };
    let eval_source = match (&args.validation_file, &dataset) {
        (Some(path), _) => Some(DataSource::Path(path.clone())),
        (None, Some(files)) if files.splits.contains_key(&Split::Validation) => {
            Some(common::split_source(files, Split::Validation)?)
        }
        _ => None,
    };
    // Before any work: one run per output folder (only node 0 writes files).
    let _lock = if args.distributed.node_rank == 0 {
        Some(qa_train::lock::OutputLock::acquire(
            &args.training.output_dir,
        )?)
    } else {
        None
    };
    let tokenizer = load_tokenizer(&model_dir)?;
    let mut config = args.training.clone();
    config.pad_token_id = pad_token_id(&tokenizer);
    config.precision = match (args.bf16, args.fp16) {
        (true, _) => Precision::Bf16,
        (_, true) => Precision::Fp16,
        _ => Precision::F32,
    };
    let (model, model_config, report) =
        qa_model::load_pretrained::<Train>(&model_dir, None, config.seed, device)?;
    qa_model::check_vocabulary(&model_config, tokenizer.get_vocab_size(true), &model_dir)?;
    if !report.initialized.is_empty() {
        eprintln!("newly initialised: {}", report.initialized.join(", "));
    }
    let windows = FeatureConfig {
        max_length: model_config.cap_window_length(args.windows.max_seq_length),
        ..args.windows.config()
    };
    let load = |source: &DataSource, max_samples| {
        common::prepare(
            source,
            &args.data,
            &windows,
            max_samples,
            &tokenizer,
            &args.cache,
        )
    };
    let mut train_data = load(&train_source, args.max_train_samples)?;
    if args.train_windows != TrainWindows::All {
        let before = train_data.windows.len();
        let windows = std::mem::replace(&mut train_data.windows, Windows::Memory(Vec::new()));
        train_data.windows = windows.select(args.train_windows);
        eprintln!(
            "training on the {} of {before} windows that hold their answer",
            train_data.windows.len()
        );
    }
    if !train_data.labelled {
        bail!(
            "{}: no question has a gold answer, so there is nothing to train on",
            train_source.name().display()
        );
    }
    let eval_data = match &eval_source {
        Some(source) => {
            let data = load(source, args.max_eval_samples)?;
            if !data.labelled {
                bail!(
                    "{}: no gold answers, so it cannot be evaluated: leave out --validation-file, \
                     or predict on it afterwards with qa eval",
                    source.name().display()
                );
            }
            Some(data)
        }
        None => None,
    };
    if let (Some(data), Some(source)) = (&eval_data, &eval_source) {
        warn_if_v2_decoded_as_v1(source.name(), data, &args.decode.config());
    }
    // Evaluation reads its windows a chunk at a time, from memory or from the cache's file.
    let eval_set = eval_data.as_ref().map(|data| EvalSet {
        examples: &data.examples,
        features: &data.windows,
        decode: args.decode.config(),
    });
    let card = CardFacts {
        base_model: common::model_origin(&args.model_name_or_path),
        train_data: match (&dataset, &args.train_file) {
            (Some(files), None) => Origin::Hub(files.repo.id.clone()),
            _ => Origin::Local(train_source.name().to_path_buf()),
        },
    };
    let job = TrainJob {
        model_config: &model_config,
        tokenizer_dir: Some(&model_dir),
        train_features: &train_data.windows,
        eval: eval_set.as_ref(),
        card: Some(&card),
    };
    let outcome = if world.size() == 1 {
        qa_train::train(model, &job, &config, device)
    } else {
        // The model already loaded goes to a peer on its device; the others load their own
        // copy. Rank 0's weights then go to all of them.
        let loaded = std::sync::Mutex::new(Some(model));
        let load = |device: &Device| {
            if device == &devices[0] {
                if let Some(model) = loaded.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Ok(model);
                }
            }
            Ok(qa_model::load_pretrained::<Train>(&model_dir, None, config.seed, device)?.0)
        };
        qa_train::train_data_parallel(load, &job, &config, &devices, &world)
    }
    .context("training failed")?;
    if world.nodes.as_ref().is_some_and(|nodes| nodes.rank > 0) {
        eprintln!(
            "node {} of the {}-peer run is done; node 0 wrote {}",
            args.distributed.node_rank,
            world.size(),
            config.output_dir.display()
        );
        return Ok(());
    }
    let r = &outcome.results;
    eprintln!(
        "trained {} steps in {:.1}s: loss {:.4}, {:.1} windows/s, first step after {:.1}s → {}",
        r.global_step,
        r.train_runtime,
        r.train_loss,
        r.train_samples_per_second,
        r.time_to_first_step,
        config.output_dir.display()
    );
    if let Some(metrics) = &outcome.eval_metrics {
        let json = metrics.to_json("eval_");
        qa_eval::decode::write_json(&config.output_dir.join("eval_results.json"), &json)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}
