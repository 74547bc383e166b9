"""The planted-strategies demo: rules checked by slow reimplementations, an offline-loadable quick build,
per-example gradients under torch.func matching an autograd loop, the demo read as a next-token model, and
(slow) the full build's accuracy and how well NPEFF recovers its rules."""
import numpy as np
import pandas as pd
import pytest
import torch

from analysis.planted import (ANSWER_POSITION, CONTENT, KEY, MARKERS, PROMPT_LENGTH, QUERY, RULES, VOCAB,
                              PlantedSettings, agreement_rates, answer_logits, build_planted, generate, load_planted_examples,
                              rule_answer)

pytestmark = pytest.mark.long
QUICK = PlantedSettings(n_train=2_000, n_test=200, n_steps=60, batch_size=64, seed=5)


def slow_answers(text: str) -> dict[str, str]:
    """Each rule's answer, recomputed by walking the prompt token by token."""
    tokens = text.split()
    content, after_key, seen_key = [], None, False
    for token in tokens[1:-1]:
        if token == KEY:
            seen_key = True
            continue
        if seen_key and after_key is None:
            after_key = token
        content.append(token)
    counts = {}
    for token in content:
        counts[token] = counts.get(token, 0) + 1
    top = max(counts.values())
    winners = [token for token, count in counts.items() if count == top]
    assert len(winners) == 1 and top > sorted(counts.values())[-2], f"no strict majority in {text!r}"
    return {"first": content[0], "last": content[-1], "after": after_key, "most": winners[0]}


def test_generator_is_deterministic_per_seed():
    pd.testing.assert_frame_equal(generate(300, seed=3), generate(300, seed=3))
    assert not generate(300, seed=3)["text"].equals(generate(300, seed=4)["text"])


def test_answers_follow_their_rule():
    frame = generate(2_000, seed=0)
    assert list(frame.columns) == ["text", "answer", "rule"]
    assert frame["rule"].value_counts().to_dict() == {rule: 500 for rule in RULES}
    inverse = {marker: rule for rule, marker in MARKERS.items()}
    for text, answer, rule in frame.itertuples(index=False):
        tokens = text.split()
        assert len(tokens) == PROMPT_LENGTH and tokens[-1] == QUERY and tokens.count(KEY) == 1
        assert inverse[tokens[0]] == rule and set(tokens[1:-1]) <= {*CONTENT, KEY}
        assert 1 < tokens.index(KEY) < PROMPT_LENGTH - 3  # KEY is followed by a content token that is not the last
        assert slow_answers(text)[rule] == answer == rule_answer(rule, text)


def test_rules_never_agree_on_a_body():
    """The four answers differ on every body (bound: 0), so no rule can stand in for another."""
    frame = generate(2_000, seed=1)
    assert all(len(set(slow_answers(text).values())) == len(RULES) for text in frame["text"])
    rates = agreement_rates(frame)
    assert len(rates) == 6 and max(rates.values()) == 0.0


def test_errors_name_the_field():
    with pytest.raises(ValueError, match=r"^rule must be one of \['first', 'most', 'after', 'last'\], got 'middle'$"):
        rule_answer("middle", "FIRST a b KEY c =")
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        generate(0, seed=0)
    with pytest.raises(ValueError, match=r"^n_steps must be >= 1, got 0$"):
        PlantedSettings(n_steps=0)
    with pytest.raises(ValueError, match=r"^n_embd must be a multiple of n_head \(4\), got 66$"):
        PlantedSettings(n_embd=66)


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    """A reduced-budget build (a few seconds): its folder, metrics and progress reports."""
    folder = tmp_path_factory.mktemp("planted")
    reports, threads = [], torch.get_num_threads()
    metrics = build_planted(folder, lambda fraction, message: reports.append((fraction, message)), QUICK)
    assert torch.get_num_threads() == threads  # the build's own thread count is not left behind
    return folder, metrics, reports


def test_quick_build_saves_a_folder_that_loads_offline(quick_build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, metrics, reports = quick_build
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 < fractions[0]
    assert (metrics["n_train"], metrics["n_test"]) == (2_000, 200) and set(metrics["accuracy_by_rule"]) == set(RULES)
    assert metrics["agreement_rate"] == 0.0 and metrics["n_parameters"] > 0
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert model.num_parameters() == metrics["n_parameters"]
    assert (tokenizer.pad_token, tokenizer.padding_side, tokenizer.model_max_length) == ("[PAD]", "left", PROMPT_LENGTH)
    test, train = load_planted_examples(folder), load_planted_examples(folder, "train")
    assert (len(train), len(test)) == (2_000, 200) and not set(train["text"]) & set(test["text"])
    pd.testing.assert_frame_equal(pd.concat([train, test], ignore_index=True), generate(2_200, seed=QUICK.seed))
    ids = torch.as_tensor(tokenizer(test["text"].tolist())["input_ids"])  # [200, PROMPT_LENGTH]
    assert ids.shape == (200, PROMPT_LENGTH) and tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids[0].tolist()) == test["text"][0].split()
    with torch.no_grad():
        predicted = tokenizer.convert_ids_to_tokens(answer_logits(model, ids).argmax(-1).tolist())
    correct = pd.Series(predicted) == test["answer"]
    for rule in RULES:
        assert correct[test["rule"] == rule].mean() == pytest.approx(metrics["accuracy_by_rule"][rule])


def test_per_example_gradients_vmap_match_autograd_loop(quick_build):
    """Gradients of log p(answer | prompt) for 8 prompts: torch.func.vmap(grad) == one backward per prompt.

    Prompts all have PROMPT_LENGTH tokens (no padding, default position ids); answer_logits passes a 4-D
    causal mask, while the loop calls the model with no mask at all.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _, _ = quick_build
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    examples = load_planted_examples(folder).iloc[:8]
    ids = torch.as_tensor(tokenizer(examples["text"].tolist())["input_ids"])  # [8, PROMPT_LENGTH]
    answers = torch.as_tensor(tokenizer.convert_tokens_to_ids(examples["answer"].tolist()))  # [8]
    params = {name: p.detach() for name, p in model.named_parameters()}

    def log_p(params, prompt, answer):  # prompt [PROMPT_LENGTH], answer [] -> log p(answer) []
        logits = answer_logits(model, prompt[None], params)[0]  # [V]
        return torch.log_softmax(logits, -1).gather(0, answer[None])[0]

    batched = torch.func.vmap(torch.func.grad(log_p), in_dims=(None, 0, 0))(params, ids, answers)
    for i in range(len(ids)):
        model.zero_grad()
        logits = model(input_ids=ids[i:i + 1]).logits[0, ANSWER_POSITION]
        torch.log_softmax(logits, -1)[answers[i]].backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(batched[name][i], p.grad, atol=1e-6, rtol=1e-5, msg=f"{name}, example {i}")


@pytest.fixture(scope="module")
def planted_demo(planted_workspace):
    """The default planted build, as the CLI's `demo planted` makes it: the test run's one build, shared by the
    accuracy and the recovery test and the Load page's."""
    from analysis.demos import load_demo

    return (planted_workspace, *load_demo("planted", planted_workspace))


@pytest.mark.slow
def test_full_build_solves_every_rule(planted_demo):
    """The default build: at least 95% held-out accuracy on each rule over its 2,000 held-out prompts."""
    _, model, data, metrics = planted_demo
    assert min(metrics.accuracy_by_group.values()) >= 0.95 and set(metrics.accuracy_by_group) == set(RULES), metrics
    assert metrics.n_test == 2_000 == len(data) and model.label_names == data.label_names, metrics


def test_quick_build_loads_as_a_next_token_model_whose_classes_are_the_vocabulary(quick_build):
    from analysis.adapters.causal_lm import CausalLmNextToken
    from analysis.datasets import predict, text_dataset
    from analysis.models import load_model

    folder, metrics, _ = quick_build
    model = load_model(folder)  # a causal LM folder: free-form next token by default
    assert isinstance(model.adapter, CausalLmNextToken) and model.label_names == list(VOCAB)
    test = load_planted_examples(folder)
    data = text_dataset(test, text_columns=["text"], label_column="answer", label_names=model.label_names,
                        name="planted", source="planted_test.csv", annotation_columns=["rule"])
    correct = predict(model, data, device="cpu").argmax(1) == data.labels
    for rule in RULES:
        assert correct[test["rule"] == rule].mean() == pytest.approx(metrics["accuracy_by_rule"][rule])


def test_rule_recovery_scores_planted_and_random_coefficients():
    from analysis.ground_truth import rule_recovery

    groups = np.repeat(["a", "b", "c"], 30)  # [90]
    W = np.eye(3)[np.repeat(np.arange(3), 30)] + 0.01  # [90, 3]: component k holds group k
    recovery = rule_recovery(W, groups)
    assert [(m.group, m.component, m.purity, m.n_examples) for m in recovery.matches] == \
        [("a", 0, 1.0, 30), ("b", 1, 1.0, 30), ("c", 2, 1.0, 30)]
    assert recovery.adjusted_rand == pytest.approx(1.0) and recovery.min_purity == 1.0
    noise = rule_recovery(np.random.default_rng(0).random((90, 3)), groups)
    assert abs(noise.adjusted_rand) < 0.1 and noise.min_purity < 0.8
    with pytest.raises(ValueError, match=r"^W must have shape \[n, r\] with n = 90 \(one row per group label\), "
                                         r"got \(89, 3\)$"):
        rule_recovery(W[:89], groups)


# Measured on the default build (seeds 0-2 of the fit; README "Planted strategies"): with 24 components FIRST, LAST
# and AFTER each have a component whose top 20 examples all follow the rule (purity 1.0 for seeds 0-4), MOST none
# (0.0), and the ARI of dominant component vs rule was 0.107-0.128 (AMD EPYC; with 16 components AFTER had its own
# component on one machine in every seed, on the other in 2 of 6, seeds 0-5). Margins: 3 of 20 top examples may
# change rule (0.85) when thread counts or BLAS reorder sums; the ARI may fall twice its seed-to-seed spread (0.07).
RECOVERED = ("after", "first", "last")
MIN_PURITY, MIN_ARI = 0.85, 0.07
N_COMPONENTS = 24


@pytest.mark.slow
def test_npeff_recovers_the_planted_rules(planted_demo):
    """The planted demo as the CLI builds it; PEFs over all parameters, LRM-NPEFF, three fit seeds."""
    from analysis.datasets import make_batches
    from analysis.fisher import compute_pefs
    from analysis.ground_truth import rule_recovery
    from analysis.npeff import fit_lrm_npeff

    root, model, data, _ = planted_demo
    pd.testing.assert_frame_equal(  # the browsing dataset is the build's held-out CSV
        pd.DataFrame({"text": [t for (t,) in data.texts], "rule": data.annotations["rule"]}),
        load_planted_examples(root / "demos" / "planted-demo")[["text", "rule"]])
    sub = data.subset(np.arange(400))
    pefs = compute_pefs(model, list(make_batches(model, sub, batch_size=32)), kind="lrm", top_k_classes=4,
                        n_values_per_example=4096)
    for seed in range(3):
        W = fit_lrm_npeff(pefs, N_COMPONENTS, n_iters=150, seed=seed).W
        recovery = rule_recovery(W, sub.annotations["rule"])
        purity = {m.group: m.purity for m in recovery.matches}
        assert min(purity[rule] for rule in RECOVERED) >= MIN_PURITY, (seed, purity)
        assert recovery.adjusted_rand >= MIN_ARI, (seed, recovery.adjusted_rand)
