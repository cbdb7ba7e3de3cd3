"""Find a graph's real inference inputs and outputs.

summarize_graph's rule ("a node nothing consumes is an output") fails on training graphs: the loss,
the optimizer's updates, save/restore and initializers are all unconsumed, while the real output
(logits feeding only the loss) is consumed. The rules here:

1. Training machinery is marked first: variables and their updates, optimizers (Apply*/Assign*),
   gradients/save/init scopes, summaries, and anything that feeds only such nodes.
2. A placeholder is a *label* when it feeds the loss but no weight is applied downstream of it
   (labels meet the network's output only in the loss and metrics); with no gradients in the
   graph, only placeholders named like labels qualify. Everything computed from labels is the
   loss region.
3. Outputs are the nodes of what remains whose data consumers are all training or loss nodes.
   Elementwise steps taken only on the way to the loss (log, clip, cast) are folded into the loss,
   so the output is the tensor the loss starts from.
4. A candidate is *strong* when it depends on an input and on some weight. Detection is ambiguous
   when no strong candidate exists or weak ones that read the inputs stand beside strong ones;
   callers then list the ranked candidates instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tfshrink import _tf
from tfshrink.graph.ir import Graph, parse_tensor

VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable", "_VarHandlesOp"}
PLACEHOLDER_OPS = {"Placeholder", "PlaceholderV2"}
NO_OUTPUT_OPS = {"NoOp", "Assert", "SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints"}
INFRA_OPS = {
    "RestoreV2", "Restore", "RestoreSlice", "ShardedFilename", "ShardedFilespec", "StringJoin",
    "VarIsInitializedOp", "IsVariableInitialized", "ScalarSummary", "HistogramSummary",
    "ImageSummary", "AudioSummary", "AudioSummaryV2", "MergeSummary", "TensorSummary",
    "TensorSummaryV2", "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
    "WriteSummary", "WriteRawProtoSummary", "Print", "PrintV2", "StringFormat",
    "ReportUninitializedVariables", "DestroyResourceOp",
} | NO_OUTPUT_OPS
MUTATOR_PREFIXES = ("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply", "Assign",
                    "Scatter", "ResourceScatter")
TRAINING_SCOPE = re.compile(
    r"^(gradients(_\d+)?|save(_\d+)?|init(_\d+)?|report_uninitialized_variables(_\d+)?|"
    r"global_step|train(_op)?|summaries|Merge/MergeSummary)(/|$)"
)
GRADIENT_ROOT = re.compile(r"^gradients(_\d+)?/(Shape|grad_ys_\d+|Fill)$")
LABEL_NAME = re.compile(r"(^|[/_])(labels?|targets?|y_true|y_|gt|ground_?truth|answers?)(\d*)($|[/_:])",
                        re.IGNORECASE)
WEIGHT_OPS = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2",
              "BatchMatMulV3", "Conv2DBackpropInput", "FusedBatchNorm", "FusedBatchNormV3",
              "BiasAdd", "Conv", "Einsum"}
# Steps a loss takes on a model output before combining it with labels; never the output itself.
LOSS_PREP_OPS = {"Log", "Log1p", "Neg", "Square", "Abs", "ClipByValue", "Maximum", "Minimum",
                 "Add", "AddV2", "Sub", "Mul", "RealDiv", "Cast", "Identity", "Softplus"}


@dataclass(frozen=True)
class Candidate:
    """A possible output, with why it was (or wasn't) taken."""

    name: str
    op: str
    strong: bool
    size: int  # nodes it depends on; bigger = more of the model behind it

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "strong": self.strong, "size": self.size}


@dataclass
class Detection:
    inputs: list[str]
    optional_inputs: list[str]
    outputs: list[str]
    candidates: list[Candidate]
    labels: list[str] = field(default_factory=list)
    ambiguous: bool = False
    training_nodes: int = 0

    @property
    def suggested_outputs(self) -> list[str]:
        strong = [c.name for c in self.candidates if c.strong]
        return strong or [c.name for c in self.candidates[:1]]


def is_mutator(op: str) -> bool:
    return op.startswith(MUTATOR_PREFIXES) and op not in ("AssertNextDataset",)


def _is_weight_source(graph: Graph, name: str) -> bool:
    op = graph.node(name).op  # each read of a proto field builds a new str: read it once
    if op in VARIABLE_OPS or op == "ReadVariableOp":
        return True
    if op == "Identity":
        (src, _), *_ = graph.data_inputs(name) or [("", 0)]
        return bool(src) and graph.node(src).op in VARIABLE_OPS
    return False


def _applies_weight(graph: Graph, name: str) -> bool:
    """True for a node that applies trained parameters (variable reads, or const weights)."""
    node = graph.node(name)
    srcs = [p for p, _ in graph.data_inputs(name)]
    if any(_is_weight_source(graph, s) for s in srcs):
        return True
    if node.op in WEIGHT_OPS:
        return any(graph.node(s).op == "Const" for s in srcs[1:])
    return False


def training_nodes(graph: Graph) -> set[str]:
    """Training and checkpoint machinery, plus everything that only feeds it."""
    marked = set()
    for node in graph:
        op = node.op
        if op in INFRA_OPS or op in VARIABLE_OPS or is_mutator(op) or TRAINING_SCOPE.match(node.name):
            marked.add(node.name)
    order = graph.topological_order()
    for name in reversed(order):  # consumers before producers
        if name in marked:
            continue
        consumers = graph.consumers(name)
        if consumers and consumers <= marked and graph.node(name).op not in PLACEHOLDER_OPS:
            marked.add(name)
    return marked


def detect_io(graph: Graph) -> Detection:
    """Detect inputs and outputs of a (training, eval or frozen) graph. See the module docstring."""
    train = training_nodes(graph)
    placeholders = [n.name for n in graph if n.op in PLACEHOLDER_OPS]
    with_default = [n.name for n in graph if n.op == "PlaceholderWithDefault" and n.name not in train]

    loss_roots = set()
    for name in train:
        if GRADIENT_ROOT.match(name):
            loss_roots.update(p for p, _ in graph.data_inputs(name) if p not in train)
    loss_ancestry = graph.ancestors(loss_roots) if loss_roots else set()

    weight_users = {n.name for n in graph if n.name not in train and _applies_weight(graph, n.name)}
    labels = []
    for ph in placeholders:
        downstream = graph.descendants([ph], control=False) - train
        if downstream & weight_users:
            continue
        if (ph in loss_ancestry) or LABEL_NAME.search(ph):
            labels.append(ph)
    loss_region = (graph.descendants(labels, control=False) - train) if labels else set()
    loss_region |= {r for r in loss_roots if r not in train}

    excluded = train | loss_region
    candidates = _sinks(graph, excluded)
    # Fold loss-only preparation steps (log, clip, ...) into the loss region.
    changed = True
    while changed:
        changed = False
        for c in sorted(candidates):
            node = graph.node(c)
            consumers = graph.data_consumers(c)
            others = [p for p, _ in graph.data_inputs(c)][1:]
            if (consumers and consumers <= loss_region and node.op in LOSS_PREP_OPS
                    and all(graph.node(p).op == "Const" for p in others)):
                loss_region.add(c)
                excluded.add(c)
                changed = True
        if changed:
            candidates = _sinks(graph, excluded)

    inputs_all = [p for p in placeholders if p not in labels]
    ranked = []
    for c in candidates:
        anc = graph.ancestors([c])
        # Through data edges only: a variable read that waits on the optimizer's update (a
        # resource variable's read_value after assign) is no output, though its control
        # inputs lead back to the inputs.
        reads_input = bool(graph.ancestors([c], control=False) & set(inputs_all)) or not inputs_all
        if not reads_input:
            continue  # computed from constants and variables only (a leftover, not an output)
        if _loop_leftover(graph, c, excluded):
            continue
        strong = bool(anc & weight_users) or not weight_users
        op = graph.node(c).op
        ranked.extend(Candidate(t, op, strong, len(anc)) for t in output_tensors(graph, c))
    ranked.sort(key=lambda c: (not c.strong, -c.size, c.name))
    strong = [c for c in ranked if c.strong]
    ambiguous = not strong or len(strong) != len(ranked)
    outputs = [c.name for c in strong] if not ambiguous else []
    needed = graph.ancestors(outputs) if outputs else set()
    inputs = [p for p in inputs_all if not outputs or p in needed]
    optional = [p for p in with_default if not outputs or p in needed]
    return Detection(inputs, optional, outputs, ranked, labels, ambiguous, len(train))


CONTROL_FLOW_OPS = {"While", "StatelessWhile", "If", "StatelessIf"}


def _loop_leftover(graph: Graph, name: str, excluded: set[str]) -> bool:
    """An unused result of a TF2 tf.while_loop / tf.cond (its counter, a gradient accumulator)
    while another result of the same op feeds the model: bookkeeping, not an output."""
    node = graph.node(name)
    if node.op == "Identity" and "T" in node.attr and node.attr["T"].type == 21:  # DT_VARIANT
        return True
    if node.op != "Identity" or not node.input:
        return False
    src, index, _ = parse_tensor(node.input[0])
    if graph.node(src).op not in CONTROL_FLOW_OPS:
        return False
    for sibling in graph.data_consumers(src):
        if sibling == name or sibling in excluded:
            continue
        if any(parse_tensor(r)[1] != index for r in graph.node(sibling).input if parse_tensor(r)[0] == src) \
                and graph.consumers(sibling) - excluded:
            return True
    return False


def num_outputs(node: Any) -> int:
    """How many tensors a node produces: from `_output_shapes` when the exporter recorded them
    (custom ops such as TFLite_Detection_PostProcess), else from the op's registered OpDef."""
    if "_output_shapes" in node.attr:
        return max(1, len(node.attr["_output_shapes"].list.shape))

    op = _tf.op_def(node.op)
    if op is None:
        return 1
    count = 0
    for arg in op.output_arg:
        if arg.number_attr:
            count += node.attr[arg.number_attr].i
        elif arg.type_list_attr:
            count += len(node.attr[arg.type_list_attr].list.type)
        else:
            count += 1
    return max(count, 1)


def output_tensors(graph: Graph, name: str) -> list[str]:
    """`name`, `name:1`, ... for every output of a sink node."""
    n = num_outputs(graph.node(name))
    return [name] + [f"{name}:{i}" for i in range(1, n)]


def _sinks(graph: Graph, excluded: set[str]) -> list[str]:
    out = []
    for node in graph:
        name = node.name
        if name in excluded or node.op in PLACEHOLDER_OPS or node.op in VARIABLE_OPS:
            continue
        if node.op in ("Const", "PlaceholderWithDefault") or node.op in NO_OUTPUT_OPS:
            continue
        consumers = graph.data_consumers(name)
        if not consumers and graph.consumers(name) - excluded:
            continue  # used only as a control trigger (a tf.cond's switch_t / switch_f)
        if consumers <= excluded:
            out.append(name)
    return out


def ancestors_of_tensors(graph: Graph, tensors: list[str]) -> set[str]:
    return graph.ancestors(parse_tensor(t)[0] for t in tensors)
