//! Typed errors of training: bad settings ([`ConfigError`]), unusable checkpoints, numbers that
//! stopped being numbers, and the model/eval/IO errors underneath.

use std::path::PathBuf;

use qa_eval::{Metric, SquadVersion};

use crate::checkpoint::RunFingerprint;
use crate::config::{IntervalStrategy, Precision, Schedule};

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] qa_model::ModelError),
    #[error(transparent)]
    Precision(#[from] qa_model::model::PrecisionError),
    #[error(transparent)]
    Eval(#[from] qa_eval::EvalError),
    #[error(transparent)]
    Write(#[from] qa_data::atomic::WriteError),
    /// A training window could not be read (from the windows cache). Boxed: the data errors
    /// are large, and every `Result` of the crate carries this one.
    #[error(transparent)]
    Data(Box<qa_data::DataError>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Checkpoint {
        path: PathBuf,
        what: CheckpointProblem,
    },
    #[error("invalid training settings: {0}")]
    Config(#[from] ConfigError),
    #[error(
        "{dir}: another qa train is writing into this folder ({holder}): wait for it, or use \
         another --output-dir"
    )]
    OutputLocked { dir: PathBuf, holder: String },
    #[error("{0}: the output folder is a file")]
    OutputIsAFile(PathBuf),
    /// A checkpoint or the final model could not be written (a full disk, a file size limit):
    /// what is still there to resume from.
    #[error(
        "writing {what} failed: {source}; {}",
        match previous {
            Some(dir) => format!(
                "{} is intact: run the same command again to resume from it",
                dir.display()
            ),
            None => "no earlier checkpoint exists".to_string(),
        }
    )]
    SaveFailed {
        what: String,
        previous: Option<PathBuf>,
        #[source]
        source: Box<TrainError>,
    },
    #[error("no training windows: the training file gave no window to learn from")]
    NoTrainingWindows,
    #[error(
        "a training window has {longest} tokens but the model has only {positions} positions: \
         cut windows with --max-seq-length {positions} or less"
    )]
    WindowTooLong { longest: usize, positions: usize },
    /// f32 training whose loss or gradient norm overflowed: every later weight would be NaN.
    #[error(
        "step {step}: the {what} is {value} (not a finite number): training diverged; \
         lower --learning-rate or keep --max-grad-norm on (nothing of this step was saved)"
    )]
    Diverged {
        step: usize,
        what: &'static str,
        value: f64,
    },
    /// Data-parallel training: a collective operation answered with an error.
    #[error("peer {rank}: {op} failed: {what}")]
    Collective {
        rank: usize,
        op: &'static str,
        what: String,
    },
    /// Data-parallel training: the other peers did not join an operation in time.
    #[error(
        "peer {rank}: no answer from the other peers within {seconds} s during {op}: a peer \
         died, hangs or cannot be reached{hint}; for steps slower than that, raise --ddp-timeout"
    )]
    CollectiveTimeout {
        rank: usize,
        op: &'static str,
        seconds: u64,
        /// Which peers were waited for, where this process can tell.
        hint: String,
    },
    /// Data-parallel training: another peer failed or is gone, so this one stopped.
    #[error("peer {rank} stopped: {what}")]
    PeerLost { rank: usize, what: String },
    /// Data-parallel training: the peers could not be set up as asked.
    #[error("data-parallel training: {0}")]
    World(String),
}

impl From<qa_data::DataError> for TrainError {
    fn from(error: qa_data::DataError) -> Self {
        Self::Data(Box::new(error))
    }
}

/// What is wrong with a checkpoint folder.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointProblem {
    #[error("malformed trainer state: {0}")]
    MalformedState(String),
    #[error(
        "was written by a run of {written} steps, this run has {this_run}: resume with the same \
         data and settings, or pass --overwrite-output-dir"
    )]
    OtherRunLength { written: usize, this_run: usize },
    #[error(
        "was written by a run over other windows or batching ({written:?}; this run: \
         {this_run:?}): resume with the same data and batch settings, or pass \
         --overwrite-output-dir"
    )]
    OtherRun {
        written: RunFingerprint,
        this_run: RunFingerprint,
    },
    #[error(
        "was written by a run on {written} peer(s), this run has {this_run}: resume with the same \
         number of devices and nodes (the global batch and the data order depend on it), or \
         pass --overwrite-output-dir"
    )]
    OtherWorldSize { written: usize, this_run: usize },
    #[error(
        "its position (step {step}, batch {batch_in_epoch} of the epoch) lies outside this run: \
         the trainer state was edited or belongs to another run; pass --overwrite-output-dir"
    )]
    PositionOutOfRange { step: usize, batch_in_epoch: usize },
    #[error(
        "optimizer state for {0}, which the model does not have (a checkpoint of another \
         model or an older version): pass --overwrite-output-dir to start afresh"
    )]
    UnknownParameter(String),
    #[error("optimizer state has m.{0} but no v.{0}")]
    MissingSecondMoment(String),
    /// A tensor of `optimizer.safetensors` not named `m.PARAM`/`v.PARAM`.
    #[error(
        "tensor {0} is not an optimizer moment (m.PARAMETER or v.PARAMETER): the file was \
         replaced (by model weights?); resume from another checkpoint or pass \
         --overwrite-output-dir"
    )]
    NotAMoment(String),
    #[error(
        "tensor {0} is missing (after an update every parameter has both moments): the file \
         is damaged; resume from another checkpoint or pass --overwrite-output-dir"
    )]
    MissingMoment(String),
    #[error(
        "tensor {tensor} is {dtype}, but moments are saved as F32: the file was converted or \
         damaged; resume from another checkpoint or pass --overwrite-output-dir"
    )]
    MomentDtype { tensor: String, dtype: String },
    #[error(
        "tensor {tensor} has shape {found:?}, but {parameter} has {expected} values (expected \
         shape [{expected}]): the file is damaged or belongs to another model; resume from \
         another checkpoint or pass --overwrite-output-dir"
    )]
    MomentShape {
        tensor: String,
        parameter: String,
        expected: usize,
        found: Vec<usize>,
    },
    /// NaN or infinity in saved weights or moments: training never saves them.
    #[error(
        "tensor {0} holds NaN or infinite values: the checkpoint is corrupt (training never \
         saves them); resume from another checkpoint or pass --overwrite-output-dir"
    )]
    NonFiniteTensor(String),
    /// A field of `trainer_state.json` that disagrees with the folder or the other fields.
    #[error(
        "field {field} is {value}, but {expected}: the trainer state was edited or damaged; \
         resume from another checkpoint or pass --overwrite-output-dir"
    )]
    InconsistentState {
        field: String,
        value: String,
        expected: String,
    },
}

/// Settings that cannot train, refused before any work starts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("--precision {0} is for inference; training steps take --products")]
    InferencePrecisionInTraining(qa_model::InferencePrecision),
    #[error("batch size and gradient_accumulation_steps must be at least 1")]
    ZeroBatch,
    #[error(
        "{} needs an evaluation set: give --validation-file (or a dataset with a validation split)",
        if *.load_best { "--load-best-model-at-end" } else { "--eval-strategy/--eval-steps" }
    )]
    EvaluationWithoutData { load_best: bool },
    #[error("{name} must be a positive finite number, got {value}")]
    NotPositive { name: &'static str, value: f64 },
    #[error("{name} must be a finite number ≥ 0, got {value}")]
    NotFinite { name: &'static str, value: f64 },
    #[error("warmup_ratio must be in [0, 1], got {0}")]
    WarmupRatio(f64),
    #[error("Adam needs 0 ≤ beta1, beta2 < 1 and epsilon > 0 (got {beta1}, {beta2}, {epsilon})")]
    Adam {
        beta1: f64,
        beta2: f64,
        epsilon: f64,
    },
    #[error("--{what}-steps must be at least 1")]
    ZeroSteps { what: &'static str },
    #[error("--{what}-strategy steps needs --{what}-steps N (N ≥ 1)")]
    StepsStrategyNeedsSteps { what: &'static str },
    #[error("--{what}-steps only goes with --{what}-strategy steps, not {strategy:?}")]
    StepsNeedStepsStrategy {
        what: &'static str,
        strategy: IntervalStrategy,
    },
    #[error(
        "load_best_model_at_end needs evaluation and saving on the same schedule: both per \
         epoch, or save_steps a multiple of eval_steps (eval: {eval:?}, save: {save:?})"
    )]
    BestModelSchedule { eval: Schedule, save: Schedule },
    #[error("metric_for_best_model {0} is not a score (a count or a threshold) and cannot pick a best model")]
    MetricNotAScore(Metric),
    #[error("metric_for_best_model {metric} is not reported when evaluating {version:?} data")]
    MetricNotReported {
        metric: Metric,
        version: SquadVersion,
    },
    #[error("unknown precision {0:?} (f32, bf16, fp16 or f64)")]
    UnknownPrecision(String),
    #[error(
        "{precision:?} mixed precision needs {dtype} support on {device} ({hint}), or use f32"
    )]
    PrecisionUnsupported {
        precision: Precision,
        dtype: String,
        device: String,
        hint: &'static str,
    },
    #[error("unknown lr_scheduler_type {0:?} (linear, cosine, constant or constant_with_warmup)")]
    UnknownScheduler(String),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
