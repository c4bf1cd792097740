"""Issue 8 (describe): real batched greedy generation with a tiny GPT-2 built from a config,
cached on disk: a second run generates nothing, a killed run resumes; wired into the build:
the description columns are published in items.parquet and served by Feast, and they feed
the encode stage's key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.killed_generation import kill_after_cached

pytestmark = pytest.mark.integration



def make_tiny_gpt2(dst: Path) -> Path:
    """A GPT-2 with small random weights and MiniLM's (WordPiece) tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from xemb.embedders.encode import default_model_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(default_model_path()), local_files_only=True)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=256, n_embd=32, n_layer=2,
                     n_head=2, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                     pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


ITEMS = [{"title": f"{adj} {noun}", "domain": dom, "item_id": i}
         for i, (adj, noun, dom) in enumerate(
             (a, n, d) for a in ("red", "organic", "large", "stainless steel", "spicy")
             for n, d in (("tea kettle", "kitchen"), ("coffee beans", "grocery"),
                          ("chef knife set with block", "kitchen"), ("olive oil", "grocery")))]


def _cfg(model: Path, **kw):  # type: ignore[no-untyped-def]
    from xemb.settings.offline import DescribeConfig

    return DescribeConfig(**{"enabled": True, "model": model, "max_new_tokens": 6,
                             "batch_size": 4, **kw})


def test_batched_left_padded_generation_is_greedy_and_cached(gpt2: Path, tmp_path: Path) -> None:
    from xemb.embedders.describe import Generator, describe_items

    cfg = _cfg(gpt2, prompts={"description_general": "describe {title}:",
                              "description_domain": "a {domain} item, {title} (#{item_id}):"})
    gen = Generator(cfg)
    cols, n_new = describe_items(cfg, ITEMS, tmp_path, gen, log=lambda _: None)
    assert n_new == 2 * len(ITEMS) and set(cols) == {"description_general",
                                                     "description_domain"}
    assert all(isinstance(t, str) for c in cols.values() for t in c)
    # left padding: an item's text in a batch equals its text generated alone
    alone = gen.generate([f"describe {ITEMS[-1]['title']}:"])[0]
    assert cols["description_general"][-1] == alone
    again, n_new = describe_items(cfg, ITEMS, tmp_path, gen, log=lambda _: None)
    assert n_new == 0 and again == cols  # all from the cache
    cfg2 = _cfg(gpt2, prompts={"description_general": "describe {title}:"}, max_new_tokens=4)
    assert describe_items(cfg2, ITEMS, tmp_path, log=lambda _: None)[1] == len(ITEMS)


def test_unknown_prompt_field_is_a_config_error(gpt2: Path, tmp_path: Path) -> None:
    from xemb.embedders.describe import describe_items
    from xemb.errors import ConfigError

    with pytest.raises(ConfigError, match="brand"):
        describe_items(_cfg(gpt2, prompts={"description_general": "{brand}"}), ITEMS,
                       tmp_path)
    # a format the value does not take names the prompt and the row, before any model loads
    missing = tmp_path / "no-model-here"
    with pytest.raises(ConfigError, match=r"describe\.prompts\.description_domain: cannot "
                                          r"fill the template for item row 0"):
        describe_items(_cfg(missing, prompts={"description_domain": "{title:d}"}), ITEMS,
                       tmp_path)


@pytest.mark.parametrize(("describe", "message"), [
    ({"prompts": {"blurb": "{title}"}}, "unknown description column 'blurb'"),
    ({"use": "fused"}, "'concat' or 'separate'"),
    ({"prompts": {"description_general": "about {title"}}, "not a valid template"),
    ({"prompts": {"description_domain": "a {} for {title}"}}, "placeholder {} is not"),
    ({"prompts": {"description_general": "{title[0]}"}}, "{title[0]} is not an item field"),
    ({"model_class": "vision"}, "'causal-lm' or 'image-text-to-text'"),
])
def test_bad_describe_config_names_the_field(tmp_path: Path, describe: dict,
                                             message: str) -> None:
    import yaml

    from xemb.errors import ConfigError
    from xemb.settings import load_config

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"describe": {"enabled": True, **describe}}))
    with pytest.raises(ConfigError, match=r"describe\.(prompts|use|model_class)") as err:
        load_config(path)
    assert message in str(err.value)


_CHILD = """
import sys, time
from pathlib import Path
from xemb.embedders import describe
from xemb.settings.offline import DescribeConfig
slow = describe.Generator.generate
def generate(self, prompts):
    time.sleep(0.3)
    return slow(self, prompts)
describe.Generator.generate = generate
items = [{"title": f"item number {i}", "domain": "kitchen"} for i in range(60)]
cfg = DescribeConfig(enabled=True, model=Path(sys.argv[1]), max_new_tokens=4, batch_size=2,
                     prompts={"description_general": "describe {title}:"})
describe.describe_items(cfg, items, Path(sys.argv[2]))
"""


def test_a_killed_run_resumes(gpt2: Path, tmp_path: Path) -> None:
    from xemb.embedders.describe import describe_items
    from xemb.settings.offline import DescribeConfig

    cache = tmp_path / "cache"
    done = kill_after_cached(_CHILD, [str(gpt2), str(cache)], cache, 10,
                             "the child to describe 10 items")
    assert 10 <= done < 60, done
    items = [{"title": f"item number {i}", "domain": "kitchen"} for i in range(60)]
    cfg = DescribeConfig(enabled=True, model=gpt2, max_new_tokens=4, batch_size=2,
                         prompts={"description_general": "describe {title}:"})
    cols, n_new = describe_items(cfg, items, cache, log=lambda _: None)
    kept = len(cols["description_general"]) - n_new
    assert kept >= done and n_new <= 60 - done  # only what the killed run had not finished
    assert describe_items(cfg, items, cache, log=lambda _: None)[1] == 0


DESCRIBE = {"enabled": True, "max_new_tokens": 3, "batch_size": 64,
            "prompts": {"description_general": "describe {title}:",
                        "description_domain": "a {domain} product: {title}. it is"}}


@pytest.fixture(scope="module")
def small_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~360 items: generation on CPU costs ~10 ms a text even with the tiny GPT-2."""
    from tests.conftest import make_slice

    return make_slice(tmp_path_factory.mktemp("describe-slice") / "data", n_train=8,
                      n_eval=4, n_cold=4)


def _build_config(folder: Path, tiny_slice: Path, tiny_bert: Path, gpt2: Path,
                  **describe: object):  # type: ignore[no-untyped-def]
    from tests.conftest import write_config
    from xemb.settings import load_config

    if not (folder / "data").exists():
        (folder / "data").symlink_to(tiny_slice)
    return load_config(write_config(folder, {
        "encoder": {"model": str(tiny_bert)}, "feast": {"enabled": True},
        "describe": {**DESCRIBE, "model": str(gpt2), **describe}}))


def test_a_build_with_describe_publishes_and_serves_descriptions(
        small_slice: Path, tiny_bert: Path, gpt2: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    import pyarrow.parquet as pq

    from xemb import layout
    from xemb.embedders.describe import with_descriptions
    from xemb.embedders.pipeline import build, prepare
    from xemb.feature_repo import get_feature_store

    cfg = _build_config(tmp_path, small_slice, tiny_bert, gpt2)
    manifest = build(cfg)
    assert manifest is not None
    items = pq.read_table(cfg.build.root / "versions" / manifest.version / layout.ITEMS)
    general = items.column("description_general").to_pylist()
    domain = items.column("description_domain").to_pylist()
    assert len(general) == items.num_rows and all(isinstance(t, str) for t in general + domain)
    assert len(set(general)) > 1  # one text per item, not one for all
    # the encoder read title + descriptions (concat)
    ctx = prepare(cfg)
    texts = ctx.encoder_texts()
    assert texts == with_descriptions(ctx.ds.texts, ctx.descriptions())
    assert texts[0].startswith(ctx.ds.texts[0]) and len(texts[0]) > len(ctx.ds.texts[0])
    # Feast serves the description columns of the current version
    fs = get_feature_store(cfg.build.root)
    ids = items.column("item_id").to_pylist()[:5]
    got = fs.get_online_features(
        features=["item_embeddings:description_general", "item_embeddings:description_domain"],
        entity_rows=[{"item_id": i} for i in ids]).to_dict()
    assert got["description_general"] == general[:5]
    assert got["description_domain"] == domain[:5]
    # a second build generates nothing (and publishes nothing new)
    cache = next((cfg.build.root / "cache" / "describe").glob("*.jsonl"))
    lines = cache.read_text().count("\n")
    assert lines == 2 * items.num_rows
    again = build(cfg)
    assert again is not None and again.version == manifest.version
    shutil.rmtree(ctx.out("describe"))  # even the stage run again takes all from the cache
    capsys.readouterr()
    build(cfg, stages=["describe"])
    assert "describe: 0 texts generated" in capsys.readouterr().err
    assert cache.read_text().count("\n") == lines


def test_describe_feeds_the_encode_key(small_slice: Path, tiny_bert: Path, gpt2: Path,
                                       tmp_path: Path) -> None:
    from xemb.embedders.pipeline import prepare

    base = prepare(_build_config(tmp_path, small_slice, tiny_bert, gpt2)).keys
    prompt = prepare(_build_config(tmp_path, small_slice, tiny_bert, gpt2, prompts={
        "description_general": "summarise {title}:"})).keys
    model = prepare(_build_config(tmp_path, small_slice, tiny_bert, gpt2,
                                  max_new_tokens=5)).keys
    off = prepare(_build_config(tmp_path, small_slice, tiny_bert, gpt2, enabled=False)).keys
    assert "describe" not in off
    for changed in (prompt, model):
        assert changed["describe"] != base["describe"]
        assert changed["encode"] != base["encode"] and changed["publish"] != base["publish"]
    assert off["encode"] != base["encode"]
    # batch size changes no text: nothing rebuilds
    same = prepare(_build_config(tmp_path, small_slice, tiny_bert, gpt2, batch_size=7)).keys
    assert same == base


def test_concat_descriptions_with_a_student(small_slice: Path, gpt2: Path,
                                            tmp_path: Path) -> None:
    """``use: concat`` with ``encoder.student`` on: the teacher labels, and the student learns
    and encodes, title + descriptions; cold start (no descriptions) encodes the title with the
    same published student graph."""
    import numpy as np

    from tests.conftest import write_config
    from tests.integration.test_distill import STATIC, make_teacher
    from xemb import layout
    from xemb.embedders.describe import with_descriptions
    from xemb.embedders.pipeline import build, prepare
    from xemb.serving.models import TextGraph
    from xemb.settings import load_config

    (tmp_path / "data").symlink_to(small_slice)
    teacher = make_teacher(tmp_path / "teacher")
    cfg = load_config(write_config(tmp_path, {
        "encoder": {"model": str(teacher), "student": {**STATIC, "teacher_sample": 200}},
        "describe": {**DESCRIBE, "model": str(gpt2), "use": "concat"}}))
    manifest = build(cfg)
    assert manifest is not None
    rec = manifest.metrics["student"]
    assert rec["cos_held_out"] > rec["cos_untrained"], rec
    ctx = prepare(cfg)
    texts = ctx.encoder_texts()
    assert texts == with_descriptions(ctx.ds.texts, ctx.descriptions()) != ctx.ds.texts
    graph = TextGraph(cfg.build.root / "versions" / manifest.version / layout.ENCODER_DIR)
    rows = np.arange(0, len(texts), 7)
    semantic = ctx.semantic()[rows]
    concat = graph.semantic([texts[i] for i in rows])
    title = graph.semantic([ctx.ds.texts[i] for i in rows])
    assert (semantic * concat).sum(1).min() > 0.99  # int8 jitter across batches only
    # the tiny teacher's vectors are all close; the title alone is still many times further
    gap_title = 1 - float((semantic * title).sum(1).mean())
    gap_concat = 1 - float((semantic * concat).sum(1).mean())
    assert gap_title > 10 * gap_concat and gap_title > 1e-3, (gap_title, gap_concat)


# ---- image-text-to-text: items with images ---------------------------------------------------
def make_tiny_llava(dst: Path) -> Path:
    """A LLaVA (tiny CLIP vision tower + tiny Llama) with small random weights, MiniLM's
    tokenizer plus an ``<image>`` token, and a LLaVA processor: the real
    ``AutoModelForImageTextToText`` / ``AutoProcessor`` loading path."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from xemb.embedders.encode import default_model_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(default_model_path()), local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=256, bos_token_id=tok.cls_token_id,
                       eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    LlavaForConditionalGeneration(LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"))).save_pretrained(dst)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                      crop_size={"height": 32, "width": 32}),
                   tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                   image_token="<image>", num_additional_image_tokens=1).save_pretrained(dst)
    return dst


def _picture(path: Path, seed: int) -> str:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
                    ).save(path)
    return str(path)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_image_text_to_text_describes_items_with_their_images(tmp_path: Path) -> None:
    """``model_class: image-text-to-text``: an item's image goes into its prompts (same title,
    other image: another text), items without one get the text prompt alone; batched output
    equals one prompt alone; the cache is keyed by the image's bytes, not its path."""
    import shutil

    from xemb.embedders.describe import describe_items
    from xemb.embedders.generate import Generator, image_prompt

    llava = make_tiny_llava(tmp_path / "llava")
    items = ITEMS[:6]
    pics = [_picture(tmp_path / f"p{i}.png", i) if i % 3 else None for i in range(6)]
    cfg = _cfg(llava, model_class="image-text-to-text",
               prompts={"description_general": "describe {title}:"})
    cols, n_new = describe_items(cfg, items, tmp_path / "cache", log=lambda _: None,
                                 images=pics)
    assert n_new == 6 and all(isinstance(t, str) for t in cols["description_general"])
    gen = Generator(cfg)
    i = 1  # an item with an image: its text in a batch equals its text generated alone
    alone = gen.generate([image_prompt(f"describe {items[i]['title']}:", pics[i])])[0]
    assert cols["description_general"][i] == alone
    other = gen.generate([image_prompt(f"describe {items[i]['title']}:", pics[2])])[0]
    plain = gen.generate([f"describe {items[i]['title']}:"])[0]
    assert len({alone, other, plain}) == 3  # the image is read, and it is this image
    assert cols["description_general"][0] == gen.generate([f"describe {items[0]['title']}:"])[0]
    # the same bytes elsewhere: all from the cache; new bytes at the same path: regenerated
    moved = [shutil.copy(p, tmp_path / f"moved{k}.png") if p else None
             for k, p in enumerate(pics)]
    assert describe_items(cfg, items, tmp_path / "cache", log=lambda _: None,
                          images=moved)[1] == 0
    _picture(Path(moved[1]), 99)
    again, n_new = describe_items(cfg, items, tmp_path / "cache", log=lambda _: None,
                                  images=moved)
    assert n_new == 1 and again["description_general"][2:] == cols["description_general"][2:]


def test_an_image_model_describes_in_a_build(tmp_path: Path) -> None:
    """The describe stage of a build over items with ``image_path`` (some without) and
    ``model_class: image-text-to-text``, end to end: both columns published, and a rebuild
    generates nothing."""
    import pyarrow.parquet as pq

    from tests.conftest import write_config
    from xemb import layout
    from xemb.embedders.pipeline import build
    from xemb.settings import load_config

    data = tmp_path / "data"
    data.mkdir()
    names = ["green tea", "dark chocolate", "milk chocolate", "coffee", "cast iron pan",
             "kettle", "coffee mug", "tea kettle"]
    rows = ["item_id,domain,title,image_path"]
    for i, name in enumerate(names, start=1):
        img = f"img{i}.png" if i % 2 else ""
        if img:
            _picture(data / img, i)
        rows.append(f"{i},{'grocery' if i <= 4 else 'kitchen'},{name},{img}")
    (data / "items.csv").write_text("\n".join(rows) + "\n")
    seqs = [[1, 2, 5], [3, 6, 7], [4, 8, 1, 5], [2, 3, 6], [7, 8, 4], [1, 5, 6, 2]]
    (data / "events.csv").write_text("\n".join(
        ["user_id,item_id,position"] + [f"u{u},{i},{p}" for u, s in enumerate(seqs)
                                        for p, i in enumerate(s)]) + "\n")
    from tests.conftest import make_tiny_bert

    cfg = load_config(write_config(tmp_path, {
        "data": {"format": "tables", "items": "data/items.csv", "events": "data/events.csv",
                 "path": None},
        "encoder": {"model": str(make_tiny_bert(tmp_path / "bert")), "max_length": 16},
        "describe": {**DESCRIBE, "model": str(make_tiny_llava(tmp_path / "llava")),
                     "model_class": "image-text-to-text"},
        "adapter": {"dim": 8, "hidden": 16, "epochs": 1, "batch_tokens": 32, "negatives": 4},
        "intents": {"k": 3, "top_m": 2, "niter": 3},
        "composer": {"epochs": 1, "batch_tokens": 32, "negatives": 4, "max_len": 5,
                     "heads": 2}}))
    manifest = build(cfg)
    assert manifest is not None
    items = pq.read_table(cfg.build.root / "versions" / manifest.version / layout.ITEMS)
    for col in ("description_general", "description_domain"):
        assert all(isinstance(t, str) for t in items.column(col).to_pylist())
    # item 1 has an image: its published description is the one its image prompt gives
    from xemb.embedders.generate import Generator, image_prompt

    gen = Generator(cfg.describe)
    row = items.column("item_id").to_pylist().index(1)
    got = items.column("description_general").to_pylist()[row]
    assert got == gen.generate([image_prompt("describe green tea:", str(data / "img1.png"))])[0]
    assert got != gen.generate(["describe green tea:"])[0]
    cache = next((cfg.build.root / "cache" / "describe").glob("*.jsonl"))
    assert cache.read_text().count("\n") == 2 * len(names)
    assert build(cfg).version == manifest.version
    assert cache.read_text().count("\n") == 2 * len(names)
