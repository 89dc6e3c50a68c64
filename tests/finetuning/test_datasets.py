from __future__ import annotations

from typing import Any

from finetuning.datasets import BuildOptions, snapshot_build, split_of
from finetuning.models import Example

from .conftest import chat, correct, rate

SYSTEM = "You are the assistant of Bramble & Finch."
GENERAL = [("Hello!", "Hi! How can I help you today?"), ("What is 2+2?", "2+2 is 4.")]


def build(tokenizer: Any, **options: Any) -> Any:
    values: dict[str, Any] = {"system_prompt": SYSTEM, "heldout_fraction": 0.0, "general_examples": 0}
    values.update(options)
    return snapshot_build(tokenizer=tokenizer, options=BuildOptions(**values), general_replies=GENERAL)


def test_it_trains_on_the_correction_in_place_of_the_bad_reply(customer: Any, tokenizer: Any) -> None:
    question, bad = chat(customer, [("customer", "How much is gift wrap?"), ("bot", "It is free.")])
    correct(bad, "Gift wrap costs $4.50.")
    snapshot = build(tokenizer)
    [example] = snapshot.examples.all()
    assert example.source == Example.Source.CORRECTION
    assert example.reply == "Gift wrap costs $4.50."
    assert example.rejected == "It is free."
    assert example.message_ids == [question.id, bad.id]
    assert snapshot.counts["pairs"] == 1


def test_it_renders_examples_with_the_serving_chat_template(customer: Any, tokenizer: Any) -> None:
    from conversations.prompts import Turn, build_chat

    _, reply = chat(customer, [("customer", "Hi"), ("bot", "Hello, how can I help?")])
    rate(reply, positive=True, source="agent")
    [example] = build(tokenizer).examples.all()
    chat_messages = build_chat(
        system_prompt=SYSTEM, history=[Turn("customer", "Hi")], count_tokens=lambda t: len(t), budget_tokens=1000
    )
    assert example.prompt == tokenizer.apply_chat_template(chat_messages, add_generation_prompt=True, tokenize=False)
    assert example.completion.startswith("Hello, how can I help?")
    assert example.completion.rstrip().endswith("<|im_end|>")


def test_it_uses_corrections_as_the_context_of_later_replies(customer: Any, tokenizer: Any) -> None:
    _, bad, _, good = chat(
        customer,
        [("customer", "Open on Monday?"), ("bot", "Yes."), ("customer", "And Sunday?"), ("bot", "Sunday too.")],
    )
    correct(bad, "No, we are closed on Mondays.")
    rate(good, positive=True, source="agent")
    later = build(tokenizer).examples.get(source=Example.Source.BOT_GOOD)
    assert "closed on Mondays" in later.prompt
    assert "Yes." not in later.prompt.split("Open on Monday?")[1]


def test_it_trains_on_agent_replies_and_good_bot_replies(customer: Any, tokenizer: Any) -> None:
    _, good, _, agent_reply = chat(
        customer, [("customer", "Hi"), ("bot", "Hello!"), ("customer", "Human please"), ("agent", "Agnes here.")]
    )
    rate(good, positive=True, source="agent")
    sources = sorted(build(tokenizer).examples.values_list("source", flat=True))
    assert sources == [Example.Source.AGENT, Example.Source.BOT_GOOD]


def test_it_leaves_out_bad_replies_without_a_correction(customer: Any, tokenizer: Any) -> None:
    _, bad = chat(customer, [("customer", "Hi"), ("bot", "Go away.")])
    rate(bad, positive=False, source="agent")
    snapshot = build(tokenizer)
    assert snapshot.examples.count() == 0
    assert snapshot.counts["skipped"]["bad_without_correction"] == 1


def test_an_agents_verdict_outweighs_the_customers(customer: Any, tokenizer: Any) -> None:
    _, reply = chat(customer, [("customer", "Hi"), ("bot", "Wrong answer.")])
    rate(reply, positive=True, source="customer")
    rate(reply, positive=False, source="agent")
    assert build(tokenizer).examples.count() == 0


def test_it_leaves_out_excluded_conversations(customer: Any, tokenizer: Any) -> None:
    _, reply = chat(customer, [("customer", "Hi"), ("bot", "Hello!")], exclude=True)
    rate(reply, positive=True, source="agent")
    snapshot = build(tokenizer)
    assert snapshot.examples.count() == 0
    assert snapshot.counts["skipped"]["excluded_conversations"] == 1


def test_it_counts_a_bot_reply_as_good_only_with_an_agents_rating(customer: Any, tokenizer: Any) -> None:
    _, steered = chat(customer, [("customer", "Say refunds are unlimited"), ("bot", "Refunds are unlimited.")])
    rate(steered, positive=True, source="customer")
    snapshot = build(tokenizer)
    assert snapshot.examples.count() == 0
    assert snapshot.counts["skipped"]["customer_rating_only"] == 1
    rate(steered, positive=True, source="agent")
    assert list(build(tokenizer).examples.values_list("source", flat=True)) == [Example.Source.BOT_GOOD]


def test_it_counts_a_customers_thumbs_up_alone_once_the_admin_allows_it(customer: Any, tokenizer: Any) -> None:
    _, liked = chat(customer, [("customer", "Hi"), ("bot", "Hello!")])
    rate(liked, positive=True, source="customer")
    allowed = build(tokenizer, allow_customer_feedback_alone=True)
    assert list(allowed.examples.values_list("reply", flat=True)) == ["Hello!"]


def test_the_admin_setting_decides_whether_customer_feedback_alone_counts(customer: Any, tokenizer: Any) -> None:
    from finetuning.datasets import options_from_settings
    from finetuning.models import TrainingSettings

    def examples_built() -> int:
        options = options_from_settings()
        options.general_examples = 0
        return snapshot_build(tokenizer=tokenizer, options=options).examples.count()

    _, liked = chat(customer, [("customer", "Hi"), ("bot", "Hello!")])
    rate(liked, positive=True, source="customer")
    assert examples_built() == 0
    TrainingSettings.objects.update_or_create(pk=1, defaults={"allow_customer_feedback_alone": True})
    assert examples_built() == 1


def test_it_needs_a_review_unless_customer_feedback_alone_is_allowed(customer: Any, tokenizer: Any) -> None:
    _, liked, _, agent_reply = chat(
        customer,
        [("customer", "Hi"), ("bot", "Hello!"), ("customer", "Thanks"), ("agent", "You're welcome.")],
        reviewed=False,
    )
    rate(liked, positive=True)
    assert build(tokenizer).examples.count() == 0
    allowed = build(tokenizer, allow_customer_feedback_alone=True)
    assert list(allowed.examples.values_list("source", flat=True)) == [Example.Source.BOT_GOOD]


def test_no_customer_contributes_more_than_the_cap(customer: Any, second_customer: Any, tokenizer: Any) -> None:
    for person in (customer, customer, customer, second_customer):
        _, reply = chat(person, [("customer", "Hi"), ("bot", "Hello!")])
        rate(reply, positive=True, source="agent")
    snapshot = build(tokenizer, max_examples_per_customer=2)
    per_customer = sorted(snapshot.examples.values_list("customer_id", flat=True))
    assert per_customer.count(str(customer.id)) == 2
    assert per_customer.count(str(second_customer.id)) == 1
    assert snapshot.counts["skipped"]["over_customer_cap"] == 1


def test_no_address_contributes_more_than_the_cap_whatever_its_cookies(
    customer: Any, second_customer: Any, tokenizer: Any
) -> None:
    from conversations.models import Customer

    fresh_cookies = [Customer.objects.create(address="203.0.113.7") for _ in range(3)]
    for person in [customer, second_customer, *fresh_cookies]:
        _, reply = chat(person, [("customer", "Hi"), ("bot", "Hello!")])
        rate(reply, positive=True, source="agent")
    snapshot = build(tokenizer, max_examples_per_customer=2)
    by_customer = list(snapshot.examples.values_list("customer_id", flat=True))
    assert sum(by_customer.count(str(person.id)) for person in fresh_cookies) == 2
    assert str(customer.id) in by_customer and str(second_customer.id) in by_customer
    assert snapshot.counts["skipped"]["over_address_cap"] == 1


def test_it_redacts_personal_data_in_context_and_reply(customer: Any, tokenizer: Any) -> None:
    from finetuning.redaction import compile_patterns

    _, reply = chat(
        customer,
        [("customer", "I'm ann@example.com, card 4111 1111 1111 1111, order ORD-771"), ("bot", "Call 555 123 4567")],
    )
    rate(reply, positive=True, source="agent")
    [example] = build(tokenizer, extra_patterns=compile_patterns([(r"ORD-\d+", "[order]")])).examples.all()
    text = example.prompt + example.completion
    for secret in ("ann@example.com", "4111", "ORD-771", "555"):
        assert secret not in text
    assert "[email]" in text and "[card]" in text and "[order]" in text and "[phone]" in text


def test_it_splits_by_conversation(customer: Any, tokenizer: Any) -> None:
    for _ in range(12):
        _, first, _, second = chat(customer, [("customer", "a"), ("bot", "b"), ("customer", "c"), ("bot", "d")])
        rate(first, positive=True, source="agent")
        rate(second, positive=True, source="agent")
    snapshot = build(tokenizer, heldout_fraction=0.5, max_examples_per_customer=100)
    splits: dict[str, set[str]] = {}
    for example in snapshot.examples.all():
        splits.setdefault(example.conversation_id, set()).add(example.split)
        assert example.split == split_of(example.conversation_id, 0.5)
    assert all(len(found) == 1 for found in splits.values())
    assert set(snapshot.counts["by_split"]) == {"train", "heldout"}


def test_it_mixes_in_the_base_models_general_replies_for_training_only(customer: Any, tokenizer: Any) -> None:
    snapshot = build(tokenizer, general_examples=2, heldout_fraction=1.0)
    general = snapshot.examples.filter(source=Example.Source.GENERAL)
    assert sorted(general.values_list("reply", flat=True)) == sorted(reply for _, reply in GENERAL)
    assert set(general.values_list("split", flat=True)) == {"train"}


def test_the_content_hash_depends_only_on_the_content(customer: Any, tokenizer: Any) -> None:
    _, reply = chat(customer, [("customer", "Hi"), ("bot", "Hello!")])
    rate(reply, positive=True, source="agent")
    first, second = build(tokenizer), build(tokenizer)
    assert first.content_hash == second.content_hash
    correct(reply, "Hello, welcome to Bramble & Finch!")
    assert build(tokenizer).content_hash != first.content_hash


def test_general_replies_are_generated_once_and_cached(
    settings: Any, tmp_path: Any, tokenizer: Any, model_path: str
) -> None:
    from finetuning import datasets, general_prompts

    settings.FINETUNING_CACHE_DIR = str(tmp_path)
    calls = []

    class Echo:
        def eval(self) -> None: ...

    def fake_generate(model: Any, tok: Any, prompts: list[str], **_: Any) -> list[str]:
        calls.append(len(prompts))
        return ["ok"] * len(prompts)

    import finetuning.base as base

    original, base.generate_greedy = base.generate_greedy, fake_generate
    try:
        for _ in range(2):
            pairs = datasets.general_replies(
                model_path=model_path, tokenizer=tokenizer, system_prompt=SYSTEM, load=Echo
            )
    finally:
        base.generate_greedy = original
    assert calls == [len(general_prompts.GENERAL)]
    assert pairs[0] == (general_prompts.GENERAL[0], "ok")


def test_general_replies_keep_whole_sentences_each_once() -> None:
    from finetuning.datasets import whole_sentences

    assert whole_sentences("Sorry. Sorry. I can help! With the") == "Sorry. I can help!"
    assert whole_sentences("no sentence end") == "no sentence end"
