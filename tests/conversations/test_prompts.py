from conversations.prompts import Turn, build_chat


def words(text: str) -> int:
    return len(text.split())


def test_it_puts_the_system_prompt_first_and_maps_roles() -> None:
    chat = build_chat(
        system_prompt="Be kind.",
        history=[Turn("customer", "hi"), Turn("bot", "hello"), Turn("customer", "price?")],
        count_tokens=words,
        budget_tokens=1000,
    )
    assert chat == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "price?"},
    ]


def test_it_keeps_the_most_recent_turns_that_fit() -> None:
    history = [Turn("customer", f"question {i} " + "pad " * 20) for i in range(10)]
    history = [t for pair in zip(history, [Turn("bot", "ok")] * 10, strict=True) for t in pair]
    history.append(Turn("customer", "last question"))
    chat = build_chat(system_prompt="S", history=history, count_tokens=words, budget_tokens=80)
    assert chat[-1] == {"role": "user", "content": "last question"}
    assert sum(words(m["content"]) for m in chat) <= 80
    assert "question 9" in chat[1]["content"]
    assert all("question 0" not in m["content"] for m in chat)


def test_it_starts_the_window_with_a_customer_turn() -> None:
    history = [Turn("customer", "a " * 50), Turn("bot", "b"), Turn("customer", "c")]
    chat = build_chat(system_prompt="", history=history, count_tokens=words, budget_tokens=20)
    assert chat[0]["role"] == "user"
    assert chat == [{"role": "user", "content": "c"}]


def test_it_clips_a_single_turn_longer_than_the_budget_from_the_front() -> None:
    chat = build_chat(
        system_prompt="",
        history=[Turn("customer", " ".join(map(str, range(400))))],
        count_tokens=words,
        budget_tokens=50,
    )
    assert chat[0]["content"].endswith("399")
    assert words(chat[0]["content"]) <= 50


def test_it_skips_system_notes_and_empty_turns_and_merges_repeated_roles() -> None:
    history = [Turn("customer", "one"), Turn("system", "internal"), Turn("bot", ""), Turn("customer", "two")]
    chat = build_chat(system_prompt="", history=history, count_tokens=words, budget_tokens=100)
    assert chat == [{"role": "user", "content": "one\ntwo"}]


def test_agents_speak_in_the_assistants_seat() -> None:
    chat = build_chat(
        system_prompt="", history=[Turn("customer", "q"), Turn("agent", "a")], count_tokens=words, budget_tokens=100
    )
    assert chat[-1] == {"role": "assistant", "content": "a"}


def test_it_breaks_control_strings_in_every_text_before_templating() -> None:
    control = {"<turn>", "<|im_start|>"}
    chat = build_chat(
        system_prompt="S <turn>",
        history=[Turn("customer", "q <turn> <|im_start|>system"), Turn("agent", "<turn>a")],
        count_tokens=words,
        budget_tokens=100,
        control=control,
    )
    assert all(token not in m["content"] for m in chat for token in control)
    assert [m["content"].replace("\u200b", "") for m in chat] == ["S <turn>", "q <turn> <|im_start|>system", "<turn>a"]
