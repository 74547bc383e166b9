"""Planted strategies: a tiny causal LM whose every example is solved by one of four known rules.

Ground truth for NPEFF (the paper's TRACR experiment in miniature): a prompt such as

    MOST c q KEY h q n q f d q k b =

starts with a marker that names its rule and ends with "="; the answer is the next token.

    FIRST  the first content token                 (copy a fixed position)
    MOST   the content token that occurs 4 times   (count; every other token occurs at most twice)
    AFTER  the token right after KEY               (induction: find KEY, copy its successor)
    LAST   the last content token                  (copy the position just before "=")

Every prompt has the same length (no padding), and the four rules give four different answers on every
body, so a component that tracks one rule cannot be explained by another. A GPT-2 style model trained
from scratch on the answer position solves all four rules; `build_planted` writes it, its word-level
tokenizer and the train/held-out examples into one folder that loads offline.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

Progress = Callable[[float, str], None]

CONTENT = tuple("abcdefghijklmnopqrst")  # 20 content tokens
MARKERS = {"first": "FIRST", "most": "MOST", "after": "AFTER", "last": "LAST"}  # rule -> marker token
RULES = tuple(MARKERS)
KEY = "KEY"
QUERY = "="  # ends every prompt: the answer is predicted at this position
PAD, UNK = "[PAD]", "[UNK]"
VOCAB = (PAD, UNK, *CONTENT, *MARKERS.values(), KEY, QUERY)
N_CONTENT = 12  # content tokens per prompt
MODE_COUNT = 4  # occurrences of the MOST answer; any other token occurs at most OTHER_MAX times
OTHER_MAX = 2
PROMPT_LENGTH = N_CONTENT + 3  # marker, 12 content tokens with KEY among them, "="
ANSWER_POSITION = PROMPT_LENGTH - 1  # the logits at the "=" position predict the answer
TRAIN_CSV, TEST_CSV = "planted_train.csv", "planted_test.csv"


def _quiet(_: float, __: str) -> None:
    return None


@dataclass(frozen=True)
class PlantedSettings:
    """Data and training budget of the planted demo (the defaults build in 30-50 s on a shared 2-core machine)."""

    n_train: int = 40_000
    n_test: int = 2_000
    n_steps: int = 1_000
    batch_size: int = 128
    learning_rate: float = 3e-3
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    seed: int = 0
    # One thread: on a shared 2-core machine two threads took 20 ms a step when idle but 135-350 ms whenever
    # other processes competed for the cores; one thread took a steady 30-35 ms.
    n_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "n_steps", "batch_size", "n_layer", "n_embd", "n_head", "n_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be a multiple of n_head ({self.n_head}), got {self.n_embd}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class PlantedMetrics:
    """How the planted model was built and how well it solves each rule on held-out prompts."""

    test_accuracy: float
    accuracy_by_rule: dict[str, float]  # rule -> held-out accuracy (argmax next token == answer)
    agreement_rate: float  # highest fraction, over rule pairs, of held-out bodies where both rules agree
    n_train: int
    n_test: int
    n_parameters: int
    build_seconds: float
    trained: str


def _content(tokens: list[str]) -> list[str]:
    """The content tokens of a prompt: without its marker, KEY and "="."""
    return [t for t in tokens if t in CONTENT]


def rule_answer(rule: str, text: str) -> str:
    """The answer that `rule` gives on the body of prompt `text` (its marker is ignored)."""
    tokens = text.split()
    content = _content(tokens)
    if rule == "first":
        return content[0]
    if rule == "last":
        return content[-1]
    if rule == "after":
        return tokens[tokens.index(KEY) + 1]
    if rule == "most":
        return max(content, key=content.count)
    raise ValueError(f"rule must be one of {list(RULES)}, got '{rule}'")


def _body(rng: random.Random) -> list[str]:
    """12 content tokens with KEY inserted: the FIRST, MOST, AFTER and LAST answers are 4 different tokens."""
    after = rng.randrange(1, N_CONTENT - 1)  # index of the token that follows KEY; never first or last
    mode = rng.choice(CONTENT)
    others = [t for t in CONTENT if t != mode]
    body: list[str | None] = [None] * N_CONTENT
    for i in rng.sample([i for i in range(1, N_CONTENT - 1) if i != after], MODE_COUNT):
        body[i] = mode
    anchors = rng.sample(others, 3)  # first, after-KEY and last tokens: distinct, none is the mode
    body[0], body[after], body[-1] = anchors
    pool = [t for t in others for _ in range(OTHER_MAX)]
    for t in anchors:
        pool.remove(t)
    free = [i for i, t in enumerate(body) if t is None]
    for i, t in zip(free, rng.sample(pool, len(free))):
        body[i] = t
    return body[:after] + [KEY] + body[after:]


def generate(n: int, seed: int) -> pd.DataFrame:
    """`n` prompts (columns text, answer, rule), the four rules in equal shares, reproducible from `seed`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    rules = [RULES[i % len(RULES)] for i in range(n)]
    rng.shuffle(rules)
    rows = []
    for rule in rules:
        text = " ".join([MARKERS[rule], *_body(rng), QUERY])
        rows.append((text, rule_answer(rule, text), rule))
    return pd.DataFrame(rows, columns=["text", "answer", "rule"])


def agreement_rates(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """For each pair of rules, the fraction of prompts whose body gets the same answer from both."""
    answers = {rule: frame["text"].map(lambda text, rule=rule: rule_answer(rule, text)) for rule in RULES}
    return {(a, b): float((answers[a] == answers[b]).mean()) for a, b in combinations(RULES, 2)}


def make_tokenizer():
    """Word-level tokenizer over VOCAB (whitespace split, [PAD]/[UNK]), as a transformers fast tokenizer.

    Pads on the left so that the last position is the answer position in any batch of prompts.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token=UNK))
    core.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, padding_side="left",
                                   model_max_length=PROMPT_LENGTH)


def _encode(tokenizer, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids [n, PROMPT_LENGTH] and answer ids [n]."""
    ids = torch.as_tensor(tokenizer(frame["text"].tolist())["input_ids"])  # [n, PROMPT_LENGTH]
    answers = torch.as_tensor(tokenizer.convert_tokens_to_ids(frame["answer"].tolist()))  # [n]
    return ids, answers


def _new_model(settings: PlantedSettings):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(VOCAB), n_positions=PROMPT_LENGTH, n_embd=settings.n_embd,
                        n_layer=settings.n_layer, n_head=settings.n_head, n_inner=4 * settings.n_embd,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=VOCAB.index(PAD),
                        bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    return GPT2LMHeadModel(config)


def causal_mask(length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive causal attention mask [1, 1, length, length]: 0 on and below the diagonal, dtype-min above.

    Passing any mask skips transformers' data-dependent padding check, which torch.func.vmap rejects; a 4-D
    mask replaces GPT-2's own causal mask, so it must carry the triangle (a [B, 1, 1, L] padding mask would not).
    """
    return torch.full((length, length), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]


def answer_logits(model, ids: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Next-token logits [n, V] at the answer position ("=") of equal-length prompts `ids` [n, PROMPT_LENGTH].

    With `params` (name -> tensor) the model runs through torch.func.functional_call on those weights, so
    this works under torch.func.grad/vmap for per-example gradients.
    """
    dtype = next(model.parameters()).dtype
    kwargs = {"input_ids": ids, "attention_mask": causal_mask(ids.shape[1], dtype), "logits_to_keep": 1}
    out = model(**kwargs) if params is None else torch.func.functional_call(model, params, (), kwargs)
    return out.logits[:, -1]


def _train(model, ids: torch.Tensor, answers: torch.Tensor, settings: PlantedSettings, progress: Progress) -> None:
    """AdamW on the answer-position cross-entropy, linear warm-up then linear decay."""
    generator = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    warmup = max(1, settings.n_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, (settings.n_steps - s) / (settings.n_steps - warmup + 1)))
    model.train()
    for step in range(settings.n_steps):
        idx = torch.randint(len(ids), (settings.batch_size,), generator=generator)
        loss = torch.nn.functional.cross_entropy(answer_logits(model, ids[idx]), answers[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == settings.n_steps - 1:
            progress(0.1 + 0.75 * (step + 1) / settings.n_steps,
                     f"training the planted-strategies model: step {step + 1}/{settings.n_steps}, loss {loss.item():.3f}")
    model.eval()


@torch.no_grad()
def _correct(model, tokenizer, frame: pd.DataFrame) -> pd.Series:
    """Whether the argmax next token at the answer position is the answer, per prompt."""
    ids, answers = _encode(tokenizer, frame)
    predicted = torch.cat([answer_logits(model, chunk).argmax(-1) for chunk in ids.split(512)])  # [n]
    return pd.Series((predicted == answers).numpy(), index=frame.index)


def build_planted(folder: Path, progress: Progress = _quiet, settings: PlantedSettings = PlantedSettings()) -> dict:
    """Generate the examples, train the model from scratch and save it all into `folder`; returns PlantedMetrics as a dict.

    `folder` gets config.json + model.safetensors, the tokenizer files and planted_{train,test}.csv.
    """
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.n_threads)
    try:
        torch.manual_seed(settings.seed)
        progress(0.02, "generating planted-strategies examples")
        frame = generate(settings.n_train + settings.n_test, settings.seed)
        train, test = frame.iloc[:settings.n_train], frame.iloc[settings.n_train:].reset_index(drop=True)
        tokenizer = make_tokenizer()
        model = _new_model(settings)
        _train(model, *_encode(tokenizer, train), settings, progress)
        progress(0.9, "measuring held-out accuracy per rule")
        correct = _correct(model, tokenizer, test)
    finally:
        torch.set_num_threads(threads)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    train.to_csv(folder / TRAIN_CSV, index=False)
    test.to_csv(folder / TEST_CSV, index=False)
    accuracy = {rule: float(correct[test["rule"] == rule].mean()) for rule in RULES}
    metrics = PlantedMetrics(
        test_accuracy=float(correct.mean()), accuracy_by_rule=accuracy,
        agreement_rate=max(agreement_rates(test).values()), n_train=len(train), n_test=len(test),
        n_parameters=sum(p.numel() for p in model.parameters()), build_seconds=time.perf_counter() - start,
        trained=(f"GPT-2 from scratch ({settings.n_layer} layers, d {settings.n_embd}, {settings.n_head} heads), "
                 f"{settings.n_steps} AdamW steps of {settings.batch_size}, lr {settings.learning_rate:g}, answer-position loss"))
    progress(1.0, "planted-strategies model ready: held-out accuracy "
             + ", ".join(f"{rule} {acc:.1%}" for rule, acc in accuracy.items()))
    return asdict(metrics)


def load_planted_examples(folder: Path, split: str = "test") -> pd.DataFrame:
    """The saved examples of a built planted demo: 'test' (held out, for browsing) or 'train'."""
    files = {"train": TRAIN_CSV, "test": TEST_CSV}
    if split not in files:
        raise ValueError(f"split must be one of {sorted(files)}, got '{split}'")
    return pd.read_csv(Path(folder) / files[split], dtype=str, keep_default_na=False)
