"""cai eval ifeval: every instruction checker on a response that follows it and one that does not,
strict against loose scoring, the four accuracies on hand-made scores, and the whole eval end to
end with the mock backend (result file, resume, the CLI, cai run and cai compare)."""

from __future__ import annotations

import json
import math

import pytest

from cai.backends.mock import MockBackend
from cai.errors import CAIError
from cai.evals.ifeval.registry import INSTRUCTIONS, check_args, follows
from cai.evals.results import read_result

GERMAN = "Das Wetter ist heute schön und ich denke, wir sollten im Park spazieren gehen."
ENGLISH = "The weather is nice today and I think we should go for a walk in the park."

# id -> (kwargs, responses that follow it, responses that do not)
CASES = {
    "change_case:capital_word_frequency": ({"capital_frequency": 2, "capital_relation": "at least"},
                                           ["THIS is VERY important.", "WELL-KNOWN FACT here."],
                                           ["This is Very important.", "Only ONE capital word."]),
    "change_case:english_capital": ({}, ["THIS IS THE ANSWER TO YOUR QUESTION."],
                                    ["This is the answer to your question.", GERMAN.upper()]),
    "change_case:english_lowercase": ({}, ["this is the answer to your question."],
                                      ["This is the answer to your question.", GERMAN.lower()]),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Write a poem about cats."},
                                  ["write a poem about cats.\nCats are soft and warm."],
                                  ["Here is a poem about cats: they are soft."]),
    "combination:two_responses": ({}, ["Answer one.\n******\nAnswer two."],
                                  ["Answer one.\n******\nAnswer one.", "Only one answer.",
                                   "One.\n******\n\n******\nTwo."]),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, ["Dear [name], you live at [address]."],
                                               ["Dear [name], hello."]),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, ["Hi.\n\nP.S. See you soon."],
                                      ["Hi. See you soon.", "Hi.\n\nPS see you"]),
    "detectable_format:constrained_response": ({}, ["My answer is maybe."], ["Yes, definitely."]),
    "detectable_format:json_format": ({}, ['```json\n{"a": 1}\n```', '{"a": [1, 2]}'], ["a: 1", '{"a": 1'],),
    "detectable_format:multiple_sections": ({"section_spliter": "SECTION", "num_sections": 2},
                                            ["SECTION 1\nfoo\nSECTION 2\nbar"], ["SECTION 1\nfoo\nbar"]),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, ["* one\n* two", "- one\n- two"],
                                              ["* one\n* two\n- three", "* one"]),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, ["*first* and *second*"],
                                                      ["*first* only", "* * and ** **"]),
    "detectable_format:title": ({}, ["<<My Title>>\nSome text."], ["My Title\nSome text.", "<<  >> text"]),
    "keywords:existence": ({"keywords": ["apple", "river"]}, ["An Apple by the river."], ["An apple by the sea."]),
    "keywords:forbidden_words": ({"forbidden_words": ["cat"]}, ["A category of dogs."], ["The Cat sat."]),
    "keywords:frequency": ({"keyword": "data", "frequency": 3, "relation": "at least"}, ["data, Data and DATA."],
                           ["data and data."]),
    "keywords:letter_frequency": ({"letter": "q", "let_frequency": 2, "let_relation": "less than"}, ["Quiet."],
                                  ["Quick queen."]),
    "language:response_language": ({"language": "de"}, [GERMAN], [ENGLISH]),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "second"},
        ["First paragraph.\n\n\"Second,\" it said."],
        ["First paragraph.\n\nThird paragraph.", "First.\n\nSecond.\n\nThird."]),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, ["One.\n***\nTwo.", "***\nOne.\n***\nTwo.\n***"],
                                             ["One.\n***\nTwo.\n***\nThree.", "One.\n***\n***\nTwo."]),
    "length_constraints:number_sentences": ({"num_sentences": 3, "relation": "less than"},
                                            ["Dr. Smith came home. It was 3.5 hours late!"],
                                            ["One. Two? Three!", "One.\nTwo. \"Three.\" Four."]),
    "length_constraints:number_words": ({"num_words": 5, "relation": "at least"}, ["one two three four five"],
                                        ["one two-three four."]),
    "punctuation:no_comma": ({}, ["No commas here."], ["Well, yes."]),
    "startend:end_checker": ({"end_phrase": "Any other questions?"}, ['Here it is. Any other questions?"'],
                             ["Any other questions? Bye."]),
    "startend:quotation": ({}, ['  "Quoted answer."\n'], ["Quoted answer.", '"']),
}


def test_every_instruction_type_of_the_data_has_a_checker_and_a_case():
    from cai.evals.tasks.ifeval import load_prompts

    prompts = load_prompts("ifeval")
    used = {i for p in prompts for i in p.instruction_ids}
    assert len(prompts) == 541 and sum(len(p.instruction_ids) for p in prompts) == 834
    assert used == set(INSTRUCTIONS) == set(CASES) and len(used) == 25


@pytest.mark.parametrize("iid", sorted(CASES))
def test_checker_passes_and_fails(iid):
    kwargs, good, bad = CASES[iid]
    assert check_args(iid, kwargs) is None
    for text in good:
        assert follows(iid, kwargs, text), f"{iid} should pass: {text!r}"
    for text in bad:
        assert not follows(iid, kwargs, text), f"{iid} should fail: {text!r}"
    assert not follows(iid, kwargs, "  \n")  # an empty response follows nothing


def test_relations_and_postscript_variants():
    assert follows("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "one two")
    assert not follows("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "one two three")
    assert follows("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Text.\nP.P.S. more")
    assert not follows("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Text.\nP.S. more")


def test_sentences_and_words_by_regex():
    from cai.evals.ifeval.text import count_sentences, count_words

    assert count_words("It's 3.5 km, well-known.") == 7  # \w+ runs, as upstream
    assert count_sentences("Mr. Smith met J. Doe at 3.5 p.m. today. Then he left! Did he? Yes.") == 4
    assert count_sentences("No end mark") == 1 and count_sentences("...") == 0


@pytest.mark.parametrize("lang,text", [
    ("en", ENGLISH), ("de", GERMAN),
    ("it", "Oggi il tempo è bello e penso che dovremmo fare una passeggiata nel parco con i bambini."),
    ("sw", "Hali ya hewa ni nzuri leo na nadhani tunapaswa kutembea katika bustani pamoja na watoto wetu."),
    ("vi", "Hôm nay thời tiết đẹp và tôi nghĩ chúng ta nên đi dạo trong công viên."),
    ("ru", "Сегодня хорошая погода, и я думаю, что нам стоит прогуляться в парке."),
    ("bg", "Днес времето е хубаво и мисля, че трябва да се разходим в парка."),
    ("fa", "امروز هوا خوب است و فکر می کنم باید در پارک قدم بزنیم."),
    ("ur", "آج موسم اچھا ہے اور میرے خیال میں ہمیں پارک میں سیر کرنی چاہیے۔"),
    ("ar", "الطقس جميل اليوم وأعتقد أنه يجب علينا أن نتمشى في الحديقة مع الأطفال."),
    ("hi", "आज मौसम अच्छा है और मुझे लगता है कि हमें पार्क में टहलना चाहिए।"),
    ("mr", "आज हवामान छान आहे आणि मला वाटते की आपण उद्यानात फिरायला जावे."),
    ("ne", "आज मौसम राम्रो छ र मलाई लाग्छ हामीले पार्कमा घुम्न जानुपर्छ।"),
    ("kn", "ಇಂದು ಹವಾಮಾನ ಚೆನ್ನಾಗಿದೆ ಮತ್ತು ನಾವು ಉದ್ಯಾನದಲ್ಲಿ ನಡೆಯಬೇಕು."),
    ("ko", "오늘 날씨가 좋아서 공원에서 산책해야 할 것 같아요."),
    ("ja", "今日は天気が良いので、公園を散歩したほうがいいと思います。"),
])
def test_language_detection(lang, text):
    from cai.evals.ifeval.language import detect_language

    assert detect_language(text) == lang


def test_language_undetermined_counts_as_followed():
    from cai.evals.ifeval.language import detect_language

    assert detect_language("1234 !!") is None and detect_language("HELLO WORLD") is None
    assert follows("language:response_language", {"language": "ko"}, "1234 !!")


def test_loose_accepts_a_preamble_a_trailer_and_markdown_strict_does_not():
    from cai.evals.ifeval.scoring import loose_variants, score_response

    assert len(loose_variants("a\nb\nc")) == 8
    ids = ["detectable_format:json_format", "startend:quotation", "startend:end_checker", "punctuation:no_comma"]
    kw = [{}, {}, {"end_phrase": "Bye."}, {}]
    cases = {
        'Sure, here is the JSON:\n{"a": 1}': [False, True],  # first line removed
        '**"Hello there."**': [False, True],  # * removed
    }
    for text, (strict, loose) in cases.items():
        s = score_response(ids[:2], kw[:2], text)
        assert any(s["loose"]) == loose and any(s["strict"]) == strict, text
    s = score_response(ids[2:], kw[2:], "Good. Bye.\n(generated)")  # last line removed
    assert s == {"strict": [False, True], "loose": [True, True]}
    s = score_response(["punctuation:no_comma"], [{}], "Intro\na, b\nOutro")  # no variant helps
    assert s == {"strict": [False], "loose": [False]}


def test_accuracies_by_hand_and_instruction_intervals_resample_prompts():
    from cai.evals.ifeval.scoring import summarise

    T, F = True, False
    scored = [{"strict": [T, T], "loose": [T, T]}, {"strict": [F, T], "loose": [T, T]},
              {"strict": [F], "loose": [F]}, {"strict": [T, F, T], "loose": [T, T, T]}]
    m = summarise(scored, n_resamples=500)
    assert m["prompt_strict_accuracy"].value == 0.25 and m["prompt_loose_accuracy"].value == 0.75
    assert m["instruction_strict_accuracy"].value == 5 / 8 and m["instruction_loose_accuracy"].value == 7 / 8
    assert m["prompt_strict_accuracy"].n == 4 and m["instruction_strict_accuracy"].n == 8
    for metric in m.values():
        lo, hi = metric.ci
        assert lo <= metric.value <= hi and hi > lo
    # One prompt: resampling prompts cannot move the share, however many instructions it has
    # (resampling instructions would).
    one = summarise([{"strict": [T, T, F], "loose": [T, T, F]}], n_resamples=200)
    assert one["instruction_strict_accuracy"].ci == pytest.approx((2 / 3, 2 / 3))


def test_bad_data_is_named_by_line(tmp_path):
    from cai.evals.tasks.ifeval import load_prompts

    bad = tmp_path / "bad.jsonl"
    good = {"key": 1, "prompt": "Hi", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    lines = [good, {**good, "key": 2, "instruction_id_list": ["punctuation:no_dots"]}]
    bad.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(CAIError, match=r"bad.jsonl:2: unknown instruction 'punctuation:no_dots'"):
        load_prompts(str(bad))
    lines[1] = {**good, "key": 2, "instruction_id_list": ["length_constraints:number_words"],
                "kwargs": [{"num_words": 5, "relation": "at most"}]}
    bad.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(CAIError, match=r"bad.jsonl:2: .*relation must be one of"):
        load_prompts(str(bad))
    bad.write_text(json.dumps(good) + "\n\n{\"key\": 2,\n")
    with pytest.raises(CAIError, match=r"bad.jsonl:3: not valid JSON \(.+\); each line is one IFEval prompt object"):
        load_prompts(str(bad))


def test_shipped_prompts_are_the_upstream_file(shared_data):
    from cai.evals.datasets import dataset_path

    assert dataset_path("ifeval").read_bytes() == (shared_data / "ifeval" / "input_data.jsonl").read_bytes()
    assert (dataset_path("ifeval").parent / "LICENSE").is_file()


# -- end to end ------------------------------------------------------------------------------------

PROMPTS = [
    ("Say hi without commas.", ["punctuation:no_comma"], [{}]),
    ("Answer in JSON.", ["detectable_format:json_format"], [{}]),
    ("Greet me in under five words and end with Bye.", ["length_constraints:number_words", "startend:end_checker"],
     [{"num_words": 5, "relation": "less than"}, {"end_phrase": "Bye."}]),
    ("Use the letter z at least 3 times, no commas.", ["keywords:letter_frequency", "punctuation:no_comma"],
     [{"letter": "z", "let_frequency": 3, "let_relation": "at least"}, {}]),
]
REPLIES = {"without commas": "Hi there friend.", "JSON": 'Sure:\n{"hi": 1}', "under five": "Hello, Bye.",
           "letter z": "Zoo, zebra."}
# strict: T | F | T T | F F ; loose: T | T | T T | F F


def _data(tmp_path):
    path = tmp_path / "ife.jsonl"
    path.write_text("".join(json.dumps({"key": k, "prompt": p, "instruction_id_list": i, "kwargs": kw}) + "\n"
                            for k, (p, i, kw) in enumerate(PROMPTS, 1)))
    return path


def _reply(conv):
    return next(r for key, r in REPLIES.items() if key in conv[-1]["content"])


def _check_numbers(res):
    assert res.task == "ifeval"
    m = res.metrics
    assert list(m) == ["prompt_strict_accuracy", "prompt_loose_accuracy", "instruction_strict_accuracy",
                       "instruction_loose_accuracy"]
    assert m["prompt_strict_accuracy"].value == 0.5 and m["prompt_loose_accuracy"].value == 0.75
    assert m["instruction_strict_accuracy"].value == 0.5 and m["instruction_loose_accuracy"].value == 4 / 6
    assert m["prompt_strict_accuracy"].n == 4 and m["instruction_loose_accuracy"].n == 6
    assert all(x.ci is not None and x.ci[0] <= x.value <= x.ci[1] for x in m.values())
    assert res.breakdown["by_instruction"]["punctuation:no_comma"]["strict_accuracy"].value == 0.5
    assert res.breakdown["by_group"]["detectable_format"]["loose_accuracy"].value == 1.0


class Failing(MockBackend):
    """Answers the first batch, then dies: a killed run."""

    def generate(self, conversations, params):
        if any(kind == "generate" for kind, _ in self.calls):
            raise RuntimeError("killed")
        return super().generate(conversations, params)


def test_eval_end_to_end_resumes_and_refuses_another_model(tmp_path):
    from cai.evals.results import write_result
    from cai.evals.tasks.ifeval import IFEvalConfig, evaluate_ifeval

    cfg = IFEvalConfig(data=str(_data(tmp_path)), output=str(tmp_path / "r.json"), batch_size=2, bootstrap=200)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_ifeval(cfg, backend=Failing(responses=_reply))
    examples = tmp_path / "r.examples.jsonl"
    assert len(examples.read_text().splitlines()) == 2  # the first batch survived
    again = MockBackend(responses=_reply)
    res = evaluate_ifeval(cfg, backend=again)
    asked = [c for kind, c in again.calls if kind == "generate"]
    assert len(asked) == 1 and len(asked[0]) == 2  # only the two missing prompts were answered
    _check_numbers(res)
    write_result(res, cfg.output)
    back = read_result(cfg.output)
    _check_numbers(back)
    assert back.examples == "r.examples.jsonl" and back.grader["name"] == "ifeval-rules"
    recs = [json.loads(x) for x in examples.read_text().splitlines()]
    by_id = {r["id"]: r for r in recs}
    assert by_id["ifeval/2"]["strict"] == [False] and by_id["ifeval/2"]["loose"] == [True]
    assert by_id["ifeval/2"]["failed"] is True and by_id["ifeval/1"]["failed"] is False
    other = MockBackend(responses=_reply)
    other.name = "mock:other"
    with pytest.raises(CAIError, match="different model"):
        evaluate_ifeval(cfg, backend=other)


def test_cli_with_a_mock_script_writes_the_result_and_a_rerun_resumes(tmp_path, capsys):
    from cai.cli import main

    script = tmp_path / "mock.yaml"
    script.write_text("generate:\n" + "".join(f"  - match: {json.dumps(k)}\n    reply: {json.dumps(v)}\n"
                                              for k, v in REPLIES.items()))
    out = tmp_path / "ife.json"
    argv = ["eval", "ifeval", "-m", f"mock:{script}", "--data", str(_data(tmp_path)), "-o", str(out),
            "--bootstrap", "200"]
    assert main(argv) == 0
    assert "ifeval.prompt_strict_accuracy" in capsys.readouterr().out
    first = json.loads(out.read_text())
    _check_numbers(read_result(out))
    records = (tmp_path / "ife.examples.jsonl").read_text()
    assert main(argv) == 0  # everything stored: nothing is answered again
    assert (tmp_path / "ife.examples.jsonl").read_text() == records
    assert json.loads(out.read_text())["metrics"] == first["metrics"]
    assert main(["eval", "ifeval", "-m", "mock:", "--data", str(tmp_path / "nope.jsonl"),
                 "-o", str(tmp_path / "x.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_shipped_set_with_limit_on_the_default_mock(tmp_path):
    from cai.evals.tasks.ifeval import IFEvalConfig, evaluate_ifeval

    res = evaluate_ifeval(IFEvalConfig(model="mock:", limit=5, output=str(tmp_path / "r.json"), bootstrap=50))
    assert res.metrics["prompt_strict_accuracy"].n == 5
    assert all(0.0 <= m.value <= 1.0 for m in res.metrics.values())


def test_run_compare_and_report_know_ifeval(tmp_path):
    from cai.evals.compare import columns, pick_axes
    from cai.evals.results import EvalResult, Metric
    from cai.report.collect import tradeoff
    from cai.run.stages import build_stage_config

    cfg, fn = build_stage_config("eval", {"task": "ifeval", "model": "mock:", "output": "r.json", "limit": 3},
                                 where="run file")
    assert cfg.limit == 3 and fn.__name__ == "evaluate_ifeval"
    ife = EvalResult("ifeval", "m", {"prompt_strict_accuracy": Metric(0.4, (0.3, 0.5), 10, True)})
    harm = EvalResult("harmlessness", "m", {"harmless_rate": Metric(0.9, (0.8, 1.0), 10, True)})
    assert pick_axes(columns([ife, harm]), None, None) == ("ifeval.prompt_strict_accuracy",
                                                           "harmlessness.harmless_rate")
    results = [{"task": r.task, "model": "m", "mtime": 0, "metrics": {k: v.to_json() for k, v in r.metrics.items()}}
               for r in (ife, harm)]
    point = tradeoff(results)["points"][0]
    assert point["x_metric"] == "prompt_strict_accuracy" and math.isclose(point["x"], 0.4)
