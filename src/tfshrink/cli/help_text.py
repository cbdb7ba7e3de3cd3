"""The examples each command's --help ends with."""

from __future__ import annotations

EPILOGS = {
    "freeze": """\b
Examples:
  tfshrink freeze ckpt_dir/ -o model.pb
  tfshrink freeze model.ckpt-100 -o model.pb --outputs prob,boxes
  tfshrink freeze model.ckpt-100 -o model.pb --bind is_training=false --bind keep_prob=1.0
  tfshrink freeze saved_model/ -o model.pb --signature serving_default
  tfshrink freeze model.keras -o model.pbtxt --text""",
    "inspect": """\b
Examples:
  tfshrink inspect model.pb
  tfshrink inspect ckpt_dir/ --json
  tfshrink inspect model.tflite""",
    "verify": """\b
Examples:
  tfshrink verify ckpt_dir/ model.pb
  tfshrink verify model.keras model.tflite --samples 10 --atol 1e-3
  tfshrink verify model.pb model_int8.tflite --inputs faces.npz --json""",
    "transform": """\b
Examples:
  tfshrink transform model.pb -o small.pb --transforms 'remove_nodes(op=Identity) strip_unused_nodes sort_by_execution_order'
  tfshrink transform --in_graph=model.pb --out_graph=small.pb --inputs=input --outputs=prob --transforms='remove_device'
  tfshrink transform --list""",
    "bench": """\b
Examples:
  tfshrink bench model.pb
  tfshrink bench model.tflite --threads 4 --runs 200
  tfshrink bench model.tflite --no-xnnpack --min-seconds 5
  tfshrink bench saved_model/ --batch 8 --profile
  tfshrink bench model.pb --input-shape input=1,224,224,3 --json
  tfshrink bench ckpt_dir/ --bind is_training=false --bind keep_prob=1.0

\b
Runs: --runs N exactly N timed runs; --min-seconds S until S seconds have passed;
neither: at least 50 runs and 1 s (at most 60 s). The first run is timed apart,
then --warmup untimed runs.
FLOPs are benchmark_model --show_flops' count: 2 x the multiply-adds of Conv2D,
DepthwiseConv2dNative and MatMul (TFLite: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED).
--profile: per-op times from TF step stats; ai-edge-litert's Python interpreter
has no op profiler, so for .tflite the output says so.

\b
--json keys: path, format, runtime, runtime_version, threads, xnnpack, batch, inputs,
init_ms, first_run_ms, warmup, runs, seconds, latency_ms {min, p50, p90, p99, mean, std},
throughput_per_s, model_bytes, peak_rss_bytes, peak_rss_method, flops, macs, flops_by_op,
flops_ops_counted, flops_ops_unknown, profile, notes (see `pydoc tfshrink.benchmarking`).""",
    "convert": """\b
Examples:
  tfshrink convert model.keras -o model.tflite
  tfshrink convert model.pb -o model_fp16.tflite --quantize float16
  tfshrink convert saved_model/ -o model_int8.tflite --quantize int8 --calibration photos/ \\
      --preprocess size=224x224,mean=127.5,std=127.5,color=rgb
  tfshrink convert ckpt_dir/ -o model_int8.tflite --quantize int8 --calibration samples.npz \\
      --input-shape input=1,48,48,3 --keep-float FULLY_CONNECTED
  tfshrink convert tflite_graph.pb -o ssd.tflite --allow-custom-ops --preprocess mean=128,std=128 \\
      --inputs normalized_input_image_tensor --input-shape normalized_input_image_tensor=1,300,300,3 \\
      --outputs TFLite_Detection_PostProcess,TFLite_Detection_PostProcess:1,TFLite_Detection_PostProcess:2,TFLite_Detection_PostProcess:3
  tfshrink convert model.keras -o model_int8.tflite --quantize int8 --calibration samples.npz \\
      --keep-float auto --min-cosine 0.999 --report int8_report/
  tfshrink convert model.keras -o model_auto.tflite --quantize auto --calibration calib/ --eval held_out/ \\
      --max-top1-drop 1

\b
--preprocess SPEC: size=WIDTHxHEIGHT, mean=M or M1/M2/M3, std=S or S1/S2/S3,
color=rgb|bgr|gray, input=NAME; the model input is (pixel - mean) / std on 0..255
pixels. Calibration images are decoded, converted and resized with it, and it is
stored in the .tflite (read it back with tfshrink.conversion.read_preprocess).
--calibration: a folder or glob of JPEG/PNG images, an .npy/.npz keyed by input
name, or `random` (poor ranges; a warning says so).
--keep-float auto: measure every layer's int8 error (TF's QuantizationDebugger,
RMSE/scale; 0.289 is rounding alone), then keep the worst layers in float one at
a time until --min-cosine (default 0.999) / --max-top1-drop holds; the output
says what was kept and what it cost in size and latency. --report DIR writes the
per-layer errors as layer_errors.csv/.png/.svg.
int8 --target cpu (default), by rules, never by timing: an output softmax stays
float, a first conv on an image input (<= 4 channels, < 1024 weights) stays float,
and so does an op XNNPACK has no int8 kernel for (PRELU), so that the model runs in
one XNNPACK partition (the output says how many). --target int8-only (= --keep-float
none): every op int8. `tfshrink tune` times the choices on a machine and writes a
plan; --plan applies it (the same bytes on every machine).
Held-out check: int8/int16x8 results are verified on --eval, else on every 5th
calibration sample (held out of calibration; the output names them); an output that
is constant there, or a cosine under --check-cosine (0.99), fails with exit 1 and
nothing written. --quantize auto tries float16, dynamic-range, int8 and int8 with
float layers and keeps the one with the fewest XNNPACK partitions, then the fewest
bytes, that meets --max-top1-drop / --min-cosine on the held-out data.
int8 activation ranges: each calibrated min/max is narrowed to the range with the
least squared int8 error on the calibration samples (finer steps; rare extremes
clip; model inputs and outputs keep theirs); --activation-ranges minmax keeps
TFLite's min/max.
A quantization-aware trained graph (FakeQuant nodes, e.g. a frozen create_eval_graph
checkpoint) converts to int8 with its trained ranges and needs no --calibration.""",
    "tune": """\b
Examples:
  tfshrink tune model.pb -o plan.json --calibration photos/ --preprocess size=48x48,mean=127.5,std=128
  tfshrink convert model.pb -o model_int8.tflite --quantize int8 --calibration photos/ \\
      --preprocess size=48x48,mean=127.5,std=128 --plan plan.json

\b
Run it on the device class the model is for (a phone's Python, or a CPU like it): it converts
the int8 candidates (the rules' choices, a float first conv, leading layers in dynamic-range
form), times each in LiteRT with XNNPACK in interleaved rounds, and writes the choices, every
measurement and the machine's facts to the plan. convert --plan applies it without timing.""",
    "compare": """\b
Examples:
  tfshrink compare model.pb model_fp16.tflite model_int8.tflite
  tfshrink compare ckpt_dir/ model.pb model.tflite --inputs faces.npz --runs 50
  tfshrink compare model.keras model.tflite --names float,int8 --json

\b
The first model is the reference: the others run on the same inputs and are compared with it
(lowest cosine and top-1 agreement, largest abs error over the outputs). Latency is bench's p50
over --runs timed runs after a first run and one warmup run; `tfshrink bench` for more.""",
    "run": """\b
Examples:
  tfshrink run recipe.toml
  tfshrink run recipe.toml --out build/ --json
  tfshrink run recipe.toml --force
  tfshrink run recipe.toml --workers 2

\b
A recipe (see examples/recipe.toml) is TOML with [[step]] tables, each with kind = freeze |
transform | convert | verify | bench | report, an optional name, and the step's options under the
CLI's names. Inputs are paths (relative to the recipe) or "@name" for an earlier step's model.
Artifacts and summary.json go to --out (default: the recipe's `out`, else RECIPE-out). Steps whose
options and input contents are unchanged are not run again (cache in OUT/.tfshrink-cache).
--workers/--ray run the steps whose inputs are ready at once, as Ray tasks; bench steps never run
at the same time on one node. Artifacts, cache and summary figures are a serial run's.""",
    "report": """\b
Examples:
  tfshrink report model.pb model_fp16.tflite model_int8.tflite -o report.html
  tfshrink report ckpt_dir/ model.pb model_int8.tflite -o report.html --names ckpt,frozen,int8 \\
      --quant-errors int8_report/

\b
One self-contained HTML file (inline CSS and SVG, no external resources): per model its format,
size, nodes/ops, parameters, inputs and outputs; size and latency bar charts; agreement with the
first model; op types; and with --quant-errors a per-layer RMSE/scale chart: the folder that
`tfshrink convert --report DIR` writes, or a CSV with a layer column and rmse/scale (or
QuantizationDebugger's mean_squared_error and scale columns).""",
    "view": """\b
Examples:
  tfshrink view model.tflite
  tfshrink view ckpt_dir/ --port 8080 --no-browser

\b
Serves the graph in Netron on localhost until Ctrl-C. A TF1 checkpoint is frozen to a temporary
.pb first; other formats are served as they are.""",
    "qat": """\b
Examples:
  tfshrink qat digits.keras --data train.npz --epochs 3 -o digits_qat.keras
  tfshrink qat digits.keras --data train.npz --val val.npz --epochs 3 --lr 1e-4 -o digits_qat.keras \\
      --tflite digits_int8.tflite
  tfshrink qat model.keras --data train.npz --epochs 2 -o qat.keras --tflite qat.tflite --input-type int8 --json

\b
--data/--val: .npz with x (inputs, or the input's name) and y (labels). Integer labels train with
sparse categorical cross-entropy, one-hot with categorical, anything else with mean squared error.
The model gets fake-quant ops (Conv2D/DepthwiseConv2D/Dense + folded BatchNormalization + ReLU,
Add/Concatenate/pooling outputs, inputs) with ranges learned while training; --tflite converts
the result to a fully int8 model with those ranges (no calibration data).
TF1 graphs: tfshrink.qat.create_training_graph / create_eval_graph in the training script
(examples/qat_tf1_digits.py), then tfshrink.qat.convert_qat.""",
    "demo": """\b
Example:
  tfshrink demo --out tfshrink-demo""",
}
