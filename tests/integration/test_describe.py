"""Issue 8 (describe): real batched greedy generation with a tiny GPT-2 built from a config,
cached on disk: a second run generates nothing, a killed run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def make_tiny_gpt2(dst: Path) -> Path:
    """A GPT-2 with small random weights and MiniLM's (WordPiece) tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from embedders.encode import default_model_path

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
    from embedders.describe import Generator, describe_items

    cfg = _cfg(gpt2, prompts={"general": "describe {title}:",
                              "specific": "a {domain} item, {title} (#{item_id}):"})
    gen = Generator(cfg)
    cols, n_new = describe_items(cfg, ITEMS, tmp_path, gen, log=lambda _: None)
    assert n_new == 2 * len(ITEMS) and set(cols) == {"general", "specific"}
    assert all(isinstance(t, str) for c in cols.values() for t in c)
    # left padding: an item's text in a batch equals its text generated alone
    alone = gen.generate([f"describe {ITEMS[-1]['title']}:"])[0]
    assert cols["general"][-1] == alone
    again, n_new = describe_items(cfg, ITEMS, tmp_path, gen, log=lambda _: None)
    assert n_new == 0 and again == cols  # all from the cache
    cfg2 = _cfg(gpt2, prompts={"general": "describe {title}:"}, max_new_tokens=4)
    assert describe_items(cfg2, ITEMS, tmp_path, log=lambda _: None)[1] == len(ITEMS)


def test_unknown_prompt_field_is_a_config_error(gpt2: Path, tmp_path: Path) -> None:
    from embedders.describe import describe_items
    from xemb.errors import ConfigError

    with pytest.raises(ConfigError, match="brand"):
        describe_items(_cfg(gpt2, prompts={"x": "{brand}"}), ITEMS, tmp_path)


_CHILD = """
import sys, time
from pathlib import Path
from embedders import describe
from xemb.settings.offline import DescribeConfig
slow = describe.Generator.generate
def generate(self, prompts):
    time.sleep(0.3)
    return slow(self, prompts)
describe.Generator.generate = generate
items = [{"title": f"item number {i}", "domain": "kitchen"} for i in range(60)]
cfg = DescribeConfig(enabled=True, model=Path(sys.argv[1]), max_new_tokens=4, batch_size=2,
                     prompts={"general": "describe {title}:"})
describe.describe_items(cfg, items, Path(sys.argv[2]))
"""


def test_a_killed_run_resumes(gpt2: Path, tmp_path: Path) -> None:
    from embedders.describe import describe_items
    from xemb.settings.offline import DescribeConfig

    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(gpt2), str(cache)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def described() -> int:
        files = list(cache.glob("*.jsonl"))
        return len(files[0].read_text().splitlines()) if files else 0

    wait_for(lambda: described() >= 10 or child.poll() is not None, timeout=240,
             interval=0.1, what="the child to describe 10 items")
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = described()
    assert 10 <= done < 60, done
    items = [{"title": f"item number {i}", "domain": "kitchen"} for i in range(60)]
    cfg = DescribeConfig(enabled=True, model=gpt2, max_new_tokens=4, batch_size=2,
                         prompts={"general": "describe {title}:"})
    cols, n_new = describe_items(cfg, items, cache, log=lambda _: None)
    kept = len(cols["general"]) - n_new
    assert kept >= done and n_new <= 60 - done  # only what the killed run had not finished
    assert describe_items(cfg, items, cache, log=lambda _: None)[1] == 0
