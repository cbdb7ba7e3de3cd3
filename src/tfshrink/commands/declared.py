"""Every command, declared once: its options (in --help order), the API function it calls, its
printer and what a recipe step of it records. tfshrink.cli builds the click commands from these,
tfshrink.recipe its step kinds, and `tfshrink.__getattr__` its lazy API map."""

from __future__ import annotations

from tfshrink.commands import figures
from tfshrink.commands.spec import Command, Option, RecipeKind
from tfshrink.conversion.modes import MODES, TARGETS

_ALIASES = {"input_shape": "input_shapes", "bind": "binds"}
_IO_TYPES = ("float32", "int8", "uint8", "int16")


def _json(help: str = "Print the result as JSON.") -> Option:
    return Option("as_json", ("--json",), "bool", help, api="", recipe=False)


def _output(help: str, *more: str, required: bool = True) -> Option:
    return Option("output", ("-o", "--output", *more), help=help, required=required, recipe=False)


def _shapes(api: str = "shapes", metavar: str = "NAME=D1,D2,...",
            help: str = "Shape for an input with unknown dims (repeatable).") -> Option:
    return Option("input_shapes", ("--input-shape",), "shapes", help, metavar=metavar, multiple=True, api=api)


def _binds(help: str) -> Option:
    return Option("binds", ("--bind",), "binds", help, metavar="NAME=VALUE", multiple=True)


_FEED_BIND = _binds("Feed a constant to whichever model has this input (is_training=false); repeatable.")
_SAVEDMODEL = (
    Option("signature", ("--signature",), help="SavedModel signature (default: serving_default)."),
    Option("tags", ("--tags",), help="SavedModel MetaGraph tag set, comma-separated (default: serve, or the only one)."),
)
_MEASURE = (
    Option("inputs", ("--inputs",), "path", "Inputs: .npz keyed by input name, or images (default: random)."),
    Option("samples", ("--samples",), "int", "Random input sets / images.", default=3, show_default=True, min=1),
    Option("preprocess", ("--preprocess",), help="Image --inputs: size=WxH,mean=M,std=S,color=rgb (default: the one "
           "a .tflite stores).", metavar="SPEC"),
    Option("runs", ("--runs",), "int", "Timed runs per model.", default=20, show_default=True, min=1),
)
_SEED = Option("seed", ("--seed",), "int", default=0, show_default=True)
_NAMES = Option("names", ("--names",), "names", "Display names, comma-separated, one per model (default: file names).")

FREEZE = Command(
    "freeze", "Freeze a checkpoint, SavedModel or Keras model into one GraphDef, then verify it.",
    (
        Option("source", required=True, kind="model", recipe="input"),
        _output("The frozen GraphDef to write (.pb, or .pbtxt with --text)."),
        Option("outputs", ("--outputs",), "names", "Output nodes or tensors, comma-separated (default: detected)."),
        _binds("Replace a placeholder by a constant, e.g. is_training=false (repeatable)."),
        Option("text", ("--text",), "bool", "Write protobuf text instead of binary."),
        *_SAVEDMODEL,
        Option("inputs", ("--inputs",), "path", "Verify on these inputs (.npz keyed by input name)."),
        Option("no_verify", ("--no-verify",), "bool", "Skip running the frozen graph against the source.",
               api="verify", invert=True),
        Option("atol", ("--atol",), "float", default=1e-5, show_default=True),
        Option("rtol", ("--rtol",), "float", default=1e-4, show_default=True),
        _shapes(),
        _json(),
    ),
    api="tfshrink.freezer:freeze", printer="tfshrink.cli.printers:print_freeze",
    recipe=RecipeKind(".pb", "graphdef", figures.freeze, figures.TEXT["freeze"], ("source", "output"),
                      aliases=_ALIASES),
)

INSPECT = Command(
    "inspect", "Summarize a model: inputs, outputs, parameters, op types, and a bench command.",
    (Option("path", required=True, kind="model", metavar="MODEL"), *_SAVEDMODEL, _json("Print the summary as JSON.")),
    api="tfshrink.inspection:inspect", printer="tfshrink.cli.printers:print_inspect",
)

VERIFY = Command(
    "verify", "Run two models of any formats on the same inputs and compare every output.",
    (
        Option("a", required=True, kind="model", metavar="MODEL_A"),
        Option("b", required=True, kind="model", metavar="MODEL_B"),
        Option("inputs", ("--inputs",), "path", "Inputs: .npz keyed by input name, images (folder, glob, file) per "
               "--preprocess, a dataset file (.toml/.json), TFRecords (with --inputs-spec) or module:function "
               "(default: random)."),
        Option("inputs_spec", ("--inputs-spec",), help="Parse spec for TFRecord --inputs: FEATURE[=INPUT]:DTYPE[:SHAPE];"
               "..., inline or a .toml/.json file.", metavar="SPEC"),
        Option("preprocess", ("--preprocess",), help="How image pixels become the input (default: what a .tflite "
               "among the two stores).", metavar="SPEC"),
        Option("samples", ("--samples",), "int", "Random input sets (or images at most) to try.", default=3,
               show_default=True),
        Option("atol", ("--atol",), "float", "Absolute tolerance.", default=1e-4, show_default=True),
        Option("rtol", ("--rtol",), "float", "Relative tolerance (of A's values).", default=1e-3, show_default=True),
        _SEED,
        _shapes(),
        _FEED_BIND,
        *_SAVEDMODEL,
        _json("Print the comparison as JSON."),
        Option("shards", kind="int", help="Recipes: read a streamed --inputs in this many shards of its files, one "
               "call each (a Ray task each under --workers), merged.", api="", cli=False, min=1),
    ),
    api="tfshrink.verification:verify", printer="tfshrink.cli.printers:print_verify",
    progress="plain:running both models", check="passed", warns=True,
    recipe=RecipeKind(".json", None, figures.verify, figures.TEXT["verify"], ("a", "b"), writes_json=True,
                      aliases=_ALIASES, merge="tfshrink.verification:merge_results"),
)

TRANSFORM = Command(
    "transform", "Rewrite a frozen GraphDef with graph_transforms' transforms, on pip TensorFlow.",
    (
        Option("source", kind="model", recipe="input"),
        Option("in_graph", ("--in_graph",), help="transform_graph's spelling of SOURCE.", hidden=True, api="",
               recipe=False),
        _output("The GraphDef to write.", "--out_graph", required=False),
        Option("inputs", ("--inputs",), "names", "Input nodes, comma-separated (default: detected)."),
        Option("outputs", ("--outputs",), "names", "Output nodes, comma-separated (default: detected)."),
        Option("transforms", ("--transforms",), help="graph_transforms spec: names, name(k=v, k=\"a,b\")."),
        Option("text", ("--text", "--output_as_text"), "bool", "Write protobuf text."),
        Option("optimize", ("--optimize",), "bool", "Run the TF2/Keras 3 preset first (inline, fold, fuse BN, strip)."),
        Option("check", ("--check",), "bool", "Run the result against the input and fail (writing nothing) if they "
               "differ.", default=True, show_default=True, secondary="--no-check"),
        Option("check_each", ("--check-each",), "bool", "Check after every transform that changed the graph."),
        Option("atol", ("--atol",), "float", "Check: absolute tolerance.", default=1e-4, show_default=True),
        Option("rtol", ("--rtol",), "float", "Check: relative tolerance.", default=1e-4, show_default=True),
        _shapes(metavar="NAME=DIMS", help="Check: shape for an input with unknown dims, e.g. input=1,224,224,3 "
                "(repeatable)."),
        Option("list_only", ("--list",), "bool", "List every transform and its parameters.", api="", recipe=False),
        _json(),
    ),
    api="tfshrink.transformer:transform", printer="tfshrink.cli.printers:print_transform", warns=True,
    recipe=RecipeKind(".pb", "graphdef", figures.transform, figures.TEXT["transform"], ("source", "output"),
                      aliases=_ALIASES),
)

BENCH = Command(
    "bench", "Time a model of any format: latency, throughput, size, memory and FLOPs (benchmark_model on pip).",
    (
        Option("model_path", required=True, kind="model", metavar="MODEL", recipe="input"),
        Option("runs", ("--runs",), "int", "Timed runs (exactly this many).", min=1),
        Option("min_seconds", ("--min-seconds",), "float", "Time runs for at least this long.", min=0, min_open=True),
        Option("warmup", ("--warmup",), "int", "Untimed runs after the first run.", default=2, show_default=True,
               min=0),
        Option("threads", ("--threads",), "int", "Runtime threads (default: the runtime's choice).", min=1),
        Option("batch", ("--batch",), "int", "Batch for inputs whose first dim is unknown.", default=1,
               show_default=True, min=1),
        _shapes(api="input_shapes"),
        _binds("TF models: replace a placeholder by a constant, e.g. is_training=false (repeatable)."),
        *_SAVEDMODEL,
        Option("no_xnnpack", ("--no-xnnpack",), "bool", "TFLite: run without LiteRT's default XNNPACK delegate.",
               api="xnnpack", invert=True),
        Option("profile", ("--profile",), "bool", "Per-op times: the top ops and a summary by op type."),
        Option("top", ("--top",), "int", "Ops listed by --profile.", default=10, show_default=True, min=1, api="",
               recipe=False),
        _json("Print the result as JSON (keys below)."),
    ),
    api="tfshrink.benchmarking:bench", printer="tfshrink.cli.printers:print_bench", progress="late:timing runs",
    recipe=RecipeKind(".json", None, figures.bench, figures.TEXT["bench"], ("model_path",), writes_json=True,
                      aliases=_ALIASES),
)

# Convert's options that also shape what `tune` measures: declared once, taken by both.
_CALIBRATION = Option("calibration", ("--calibration",), "path", "Calibration data for int8/int16x8: image folder "
                      "or glob, .npy/.npz, or random.", metavar="PATH|GLOB|random", literals=("random",))
_CALIBRATION_SPEC = Option("calibration_spec", ("--calibration-spec",), help="Parse spec for TFRecord --calibration: "
                           "FEATURE[=INPUT]:DTYPE[:SHAPE];..., inline or a .toml/.json file.", metavar="SPEC")
_CALIBRATION_SAMPLES = Option("calibration_samples", ("--calibration-samples",), "int", "Calibration samples to use "
                              "(the first ones, in file-name order).", default=100, show_default=True, min=1)
_PREPROCESS = Option("preprocess", ("--preprocess",), help="How pixels become the input, e.g. "
                     "size=224x224,mean=127.5,std=127.5.", metavar="SPEC")
_INPUT_TYPE = Option("input_type", ("--input-type",), "choice", "Model input type (int8/int16x8 only; default "
                     "float32).", choices=_IO_TYPES, case_sensitive=False)
_OUTPUT_TYPE = Option("output_type", ("--output-type",), "choice", "Model output type (int8/int16x8 only; default "
                      "float32).", choices=_IO_TYPES, case_sensitive=False)
_INPUTS = Option("inputs", ("--inputs",), "names", "Input tensors to convert from, comma-separated (default: the "
                 "placeholders).")
_OUTPUTS = Option("outputs", ("--outputs",), "names", "Output tensors, comma-separated (default: detected or the "
                  "signature's).")
_CUSTOM_OPS = Option("allow_custom_ops", ("--allow-custom-ops",), "bool", "Keep ops TFLite lacks as custom ops (the "
                     "app registers them).")
_TF_OPS = Option("select_tf_ops", ("--select-tf-ops",), "bool", "Run ops TFLite lacks with TF kernels (LiteRT's Flex "
                 "delegate).")
_RANGES = Option("activation_ranges", ("--activation-ranges",), "choice", "int8 activation ranges: mse narrows each "
                 "calibrated min/max to its least squared int8 error on the calibration samples; minmax keeps "
                 "TFLite's min/max.", default="mse", show_default=True, choices=("mse", "minmax"))
_TARGET = Option("target", ("--target",), "choice", "What int8 is made for: cpu (LiteRT with XNNPACK: a float output "
                 "softmax, small first conv and ops XNNPACK has no int8 kernel for, so the model runs in one "
                 "partition) or int8-only (every op int8: Edge TPU, NPU, microcontrollers).", default="cpu",
                 show_default=True, choices=TARGETS)
# What the int8 model is made from, beyond the source and calibration data (convert and tune).
_INT8_INPUTS = (_CALIBRATION_SAMPLES, _PREPROCESS, _INPUT_TYPE, _OUTPUT_TYPE, _shapes(api="input_shapes"), _INPUTS,
                _OUTPUTS, _CUSTOM_OPS, _TF_OPS)
_CONVERT_BIND = _binds("Replace a placeholder by a constant before converting (is_training=false); repeatable.")

CONVERT = Command(
    "convert", "Convert a model to TFLite (float, float16, dynamic-range, int8, int16x8) and check it against the "
    "source.",
    (
        Option("source", required=True, kind="model", recipe="input"),
        _output("The .tflite file to write."),
        Option("quantize", ("--quantize",), "choice", "Weights/activations precision.", default="none",
               show_default=True, choices=MODES, case_sensitive=False),
        _CALIBRATION,
        _CALIBRATION_SPEC,
        *_INT8_INPUTS,
        _TARGET,
        Option("plan", ("--plan",), "path", "Apply a plan written by `tfshrink tune` (its measured choices replace "
               "the rules; int8, target cpu, no --keep-float).", metavar="PLAN.json"),
        Option("keep_float", ("--keep-float",), "names",
               "With --quantize int8: leave this TFLite op (CONV_2D) or TF node/scope in float (repeatable); "
               "auto: keep the worst layers in float, one at a time, until --min-cosine/--max-top1-drop holds on "
               "held-out data, within --max-size-ratio; none: every op that has an int8 kernel in int8 (--target "
               "int8-only); an op with no int8 kernel stays float and convert warns naming it.",
               metavar="NODE|OP|auto|none", multiple=True),
        Option("eval", ("--eval",), "path", "Held-out data to check the result on (images or .npy/.npz, read like "
               "--calibration); calibration then uses all its samples (default: every 5th calibration sample is "
               "held out).", metavar="PATH|GLOB"),
        Option("eval_samples", ("--eval-samples",), "int", "Held-out --eval samples to check on (the first ones, in "
               "file-name order).", default=100, show_default=True, min=1),
        Option("min_cosine", ("--min-cosine",), "float", "Target of --quantize auto and --keep-float auto: every "
               "output's cosine to the source on held-out data (default 0.999)."),
        Option("max_top1_drop", ("--max-top1-drop",), "float", "Target of --quantize auto and --keep-float auto: "
               "largest drop in top-1 agreement on held-out data, in percentage points.", metavar="POINTS"),
        Option("check_cosine", ("--check-cosine",), "float", "Fail (exit 1, nothing written) when an output's cosine "
               "on held-out data is below this (default: --min-cosine if given, else 0.99; 0 never passes).",
               min=-1, max=1),
        Option("max_size_ratio", ("--max-size-ratio",), "float", "Size budget of --keep-float auto and --quantize "
               "auto: at most this many times the int8 model (default 1.5).", metavar="RATIO", min=1),
        Option("weight_rounding", ("--weight-rounding",), "choice", "int8 weights: adaptive rounds each layer to its "
               "least output error on the calibration samples; nearest keeps TFLite's rounding.",
               default="adaptive", show_default=True, choices=("adaptive", "nearest")),
        Option("report", ("--report",), "outdir", "Write per-layer int8 error (RMSE/scale, QuantizationDebugger) to "
               "DIR as CSV and a chart.", metavar="DIR"),
        _RANGES,
        *_SAVEDMODEL,
        _CONVERT_BIND,
        Option("no_verify", ("--no-verify",), "bool", "Skip comparing the result with the source.", api="verify",
               invert=True),
        _json(),
    ),
    api="tfshrink.conversion:convert", printer="tfshrink.cli.printers:print_convert", progress="phase", warns=True,
    recipe=RecipeKind(".tflite", "tflite", figures.convert, figures.TEXT["convert"], ("source", "output"),
                      aliases=_ALIASES),
)

TUNE = Command(
    "tune", "Time the int8 default's choices on this machine and write them as a plan for `convert --plan`.",
    (
        Option("source", required=True, kind="model", recipe="input"),
        Option("plan", ("-o", "--output"), help="The plan to write (.json).", required=True, recipe=False),
        Option("calibration", _CALIBRATION.flags, "path", _CALIBRATION.help, metavar=_CALIBRATION.metavar,
               literals=_CALIBRATION.literals, required=True),
        *_INT8_INPUTS,
        _RANGES,
        *_SAVEDMODEL,
        _CONVERT_BIND,
        Option("threads", ("--threads",), "int", "LiteRT threads to time with.", default=1, show_default=True, min=1),
        Option("rounds", ("--rounds",), "int", "Interleaved timing rounds.", default=3, show_default=True, min=1),
        Option("runs", ("--runs",), "int", "Runs per model per round (and at least 0.05 s).", default=30,
               show_default=True, min=1),
        _json(),
    ),
    api="tfshrink.conversion:tune", printer="tfshrink.cli.printers:print_tune", progress="phase",
)

COMPARE = Command(
    "compare", "Put models side by side: format, size, latency p50 and agreement with the first (A B [C ...]).",
    (
        Option("paths", required=True, kind="models", metavar="MODELS...", nargs=-1),
        *_MEASURE,
        Option("no_bench", ("--no-bench",), "bool", "Skip the timing (agreement and size only).", api="bench",
               invert=True),
        _SEED,
        _NAMES,
        _shapes(),
        _FEED_BIND,
        *_SAVEDMODEL,
        _json("Print the comparison as JSON."),
    ),
    api="tfshrink.reporting.compare:compare_models", printer="tfshrink.cli.printers:print_compare",
    progress="phase",
)

RUN = Command(
    "run", "Run a recipe: freeze, transform, convert, verify, bench and report steps, cached by content.",
    (
        Option("recipe", required=True),
        Option("out", ("--out",), help="Output folder (default: the recipe's `out`, else RECIPE-out beside it)."),
        Option("force", ("--force",), "bool", "Run every step, even those whose inputs and options are unchanged."),
        Option("workers", ("--workers",), "int", "Run independent steps at once on a local Ray cluster of N CPUs "
               "(pip install 'tfshrink[distributed]').", metavar="N", min=1),
        Option("ray", ("--ray",), help="Run independent steps at once on the Ray cluster at ADDRESS (the output "
               "folder must be on storage every node sees).", metavar="ADDRESS"),
        _json("Print the summary as JSON."),
    ),
    api="tfshrink.recipe:run_recipe",
)

REPORT = Command(
    "report", "Write one self-contained HTML report: stages, size and latency charts, agreement, quantization "
    "error.",
    (
        Option("models", required=True, kind="models", nargs=-1),
        _output("The HTML file to write."),
        _NAMES,
        Option("quant_errors", ("--quant-errors",), "path", "Per-layer quantization errors: convert --report's "
               "folder, or a CSV (layer, rmse/scale).", metavar="CSV"),
        *_MEASURE,
        Option("no_bench", ("--no-bench",), "bool", "Skip the timing.", api="bench", invert=True),
        Option("title", ("--title",), help="The report's title."),
        _shapes(),
        _json("Print what was measured as JSON."),
    ),
    api="tfshrink.reporting.html:report", printer="tfshrink.cli.printers:print_report", progress="phase",
    recipe=RecipeKind(".html", None, figures.report, figures.TEXT["report"], ("models", "output"),
                      aliases=_ALIASES),
)

VIEW = Command(
    "view", "Open a model's graph in Netron on localhost (any format; checkpoints are frozen first).",
    (
        Option("model", required=True),
        Option("port", ("--port",), "int", "Port on localhost (default: 8080, else a free one).", min=1, max=65535),
        Option("no_browser", ("--no-browser",), "bool", "Only serve; print the address.", api="browse", invert=True),
        Option("outputs", ("--outputs",), "names", "Checkpoints: output nodes for freezing, comma-separated "
               "(default: detected)."),
    ),
    api="tfshrink.reporting.view:view",
)

QAT = Command(
    "qat", "Quantization-aware training of a Keras model, then (--tflite) its fully int8 TFLite model.",
    (
        Option("source", required=True, metavar="MODEL"),
        Option("data", ("--data",), "path", "Training data: .npz with x and y, a dataset file (.toml/.json), TFRecords "
               "(with --data-spec) or module:function.", required=True),
        Option("data_spec", ("--data-spec",), help="Parse spec for TFRecord --data/--val: FEATURE[=INPUT]:DTYPE[:SHAPE];"
               "... (x = the input, y = the labels), inline or a .toml/.json file.", metavar="SPEC"),
        Option("epochs", ("--epochs",), "int", "Epochs of quantization-aware training.", required=True, min=1),
        Option("val", ("--val",), "path", "Validation data (.npz): float vs QAT (vs int8) accuracy."),
        Option("lr", ("--lr",), "float", "Adam learning rate.", default=1e-4, show_default=True,
               api="learning_rate"),
        Option("batch_size", ("--batch-size",), "int", default=32, show_default=True, min=1),
        _output("The QAT Keras model to write (.keras)."),
        Option("tflite", ("--tflite",), help="Also write its fully int8 TFLite model (ranges from training)."),
        Option("strategy", ("--strategy",), "choice", "Train under tf.distribute: mirrored (this machine's devices) or "
               "multi-worker (the cluster in TF_CONFIG; run the same command on every worker).",
               choices=("mirrored", "multi-worker")),
        Option("backup_dir", ("--backup-dir",), "path", "Back up the training state every epoch (Keras "
               "BackupAndRestore) and resume from it after an interruption.", metavar="DIR"),
        Option("input_type", ("--input-type",), "choice", "TFLite input type.", default="float32", show_default=True,
               choices=("float32", "int8", "uint8"), case_sensitive=False),
        Option("output_type", ("--output-type",), "choice", "TFLite output type.", default="float32",
               show_default=True, choices=("float32", "int8", "uint8"), case_sensitive=False),
        _SEED,
        _json(),
    ),
    api="tfshrink.qat.train:qat_keras", printer="tfshrink.cli.printers:print_qat",
    progress="plain:quantization-aware training",
)

DEMO = Command(
    "demo", "MTCNN's ONet with its real weights: TF1 checkpoint -> freeze -> inspect -> verify.",
    (Option("out_dir", ("--out",), help="Folder for the demo's files.", default="tfshrink-demo", show_default=True),),
    api="tfshrink.demo:run_demo",
)

COMMANDS = {c.name: c for c in (FREEZE, INSPECT, VERIFY, TRANSFORM, BENCH, CONVERT, TUNE, COMPARE, RUN, REPORT, VIEW,
                                QAT, DEMO)}
