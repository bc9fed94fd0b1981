"""The bundled demo task: a deterministic, seeded generator of five small skills.

    python -m loop.data.demo_task datasets/demo \
        --benchmark-data ../../../shared/benchmarks   # rewrites the committed files, byte for byte

Skills (the `category` field): iso_date, json_extract, unit_conversion, sentiment, short_answer.
The same generator is registered for targeted data (`generator` strategy): it makes new examples
for a requested category with a given seed. Facts and templates are split between the train pool
and the evaluation splits so that no evaluation item can be copied from the pool.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

from loop.core.cache import write_atomic
from loop.core.records import Example, content_hash

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
FIRST = ["Maria", "John", "Aiko", "Liam", "Fatima", "Noah", "Chen", "Olga", "Pedro", "Amara",
         "Lucas", "Sofia", "Ravi", "Elena", "Tom", "Ines", "Yusuf", "Hana", "Mateo", "Grace"]
LAST = ["Lopez", "Smith", "Tanaka", "Murphy", "Haddad", "Keller", "Wang", "Petrova", "Silva",
        "Okafor", "Moreau", "Rossi", "Patel", "Novak", "Berg", "Costa", "Demir", "Kim"]
CITIES = ["Porto", "Leeds", "Osaka", "Cork", "Beirut", "Zurich", "Xi'an", "Kazan", "Recife",
          "Lagos", "Lyon", "Turin", "Pune", "Brno", "Bergen", "Braga", "Izmir", "Busan"]
UNITS = [  # (from, to, factor)
    ("kilometers", "meters", 1000), ("kilograms", "grams", 1000), ("hours", "minutes", 60),
    ("meters", "centimeters", 100), ("liters", "milliliters", 1000), ("minutes", "seconds", 60),
    ("days", "hours", 24), ("weeks", "days", 7), ("feet", "inches", 12), ("yards", "feet", 3),
]
PRODUCTS = ["blender", "headphones", "backpack", "kettle", "phone case", "desk lamp", "novel",
            "hotel room", "pizza", "running shoes", "laptop", "umbrella", "coffee", "tent"]
POSITIVE = ["excellent", "sturdy", "delightful", "comfortable", "reliable", "tasty", "quiet",
            "well made", "great value", "fast"]
NEGATIVE = ["flimsy", "noisy", "overpriced", "uncomfortable", "broken", "bland", "slow",
            "disappointing", "leaky", "cheaply made"]
POS_END = ["I would buy it again.", "Highly recommended.", "It exceeded my expectations.",
           "My family loves it."]
NEG_END = ["I returned it the next day.", "Not worth the money.", "Avoid it.",
           "It stopped working within a week."]
FACTS = {  # question template, answers
    "capital": ("What is the capital of {}?", {
        "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
        "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
        "Greece": "Athens", "Austria": "Vienna", "Poland": "Warsaw", "Chile": "Santiago",
        "Cuba": "Havana", "Ireland": "Dublin", "Portugal": "Lisbon", "Sweden": "Stockholm",
        "Thailand": "Bangkok", "Germany": "Berlin", "Russia": "Moscow", "Turkey": "Ankara",
        "Australia": "Canberra", "Hungary": "Budapest", "Finland": "Helsinki"}),
    "opposite": ("What is the opposite of the word '{}'?", {
        "hot": "cold", "up": "down", "early": "late", "empty": "full", "heavy": "light",
        "open": "closed", "happy": "sad", "ancient": "modern", "rich": "poor", "wet": "dry",
        "loud": "quiet", "fast": "slow", "inside": "outside", "win": "lose", "buy": "sell",
        "push": "pull", "begin": "end", "true": "false", "sharp": "dull", "arrive": "leave"}),
    "young": ("What is a baby {} called?", {
        "dog": "puppy", "cat": "kitten", "cow": "calf", "horse": "foal", "sheep": "lamb",
        "goose": "gosling", "kangaroo": "joey", "frog": "tadpole", "deer": "fawn", "bear": "cub",
        "goat": "kid", "swan": "cygnet", "owl": "owlet", "pig": "piglet", "duck": "duckling"}),
    "plural": ("What is the plural of '{}'?", {
        "mouse": "mice", "child": "children", "goose": "geese", "tooth": "teeth", "man": "men",
        "woman": "women", "foot": "feet", "cactus": "cacti", "person": "people", "ox": "oxen",
        "leaf": "leaves", "knife": "knives", "wolf": "wolves", "crisis": "crises",
        "analysis": "analyses", "criterion": "criteria", "phenomenon": "phenomena"}),
}


def _iso_date(rng: random.Random) -> Example:
    y, m, d = rng.randint(1950, 2035), rng.randint(1, 12), rng.randint(1, 28)
    month = MONTHS[m - 1]
    suffix = "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    surface = rng.choice([
        f"{month} {d}, {y}", f"{d} {month} {y}", f"the {d}{suffix} of {month}, {y}",
        f"{d:02d}/{m:02d}/{y} (day/month/year)", f"{m:02d}/{d:02d}/{y} (month/day/year)",
        f"{month[:3]}. {d} '{y % 100:02d} (year {y})", f"{d}.{m}.{y}", f"{y}/{m}/{d}",
    ])
    instruction = rng.choice([
        "Rewrite the date in ISO 8601 format (YYYY-MM-DD). Reply with the date only.",
        "Normalise this date to YYYY-MM-DD. Output nothing else.",
        "Convert the following date to ISO format YYYY-MM-DD. Answer with only the date.",
    ])
    return _example(instruction, surface, f"{y:04d}-{m:02d}-{d:02d}", "iso_date"), (y, m, d)


def _json_extract(rng: random.Random) -> Example:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    age, city = rng.randint(18, 90), rng.choice(CITIES)
    role = rng.choice(["a nurse", "an engineer", "a teacher", "a baker", "a pilot", "a lawyer"])
    text = rng.choice([
        f"{name} ({age}) works as {role} in {city}.",
        f"Meet {name}: {role} from {city}, aged {age}.",
        f"Our customer {name} is {age} years old. Shipping address: {city}.",
        f"In {city}, {role} named {name} turned {age} last week.",
    ])
    keys = rng.choice([("name", "age", "city"), ("full_name", "age_years", "location")])
    instruction = (f"Extract the person's details as a compact JSON object with exactly the keys "
                   f"\"{keys[0]}\", \"{keys[1]}\" (an integer) and \"{keys[2]}\". Output only JSON.")
    answer = json.dumps({keys[0]: name, keys[1]: age, keys[2]: city}, ensure_ascii=False)
    return _example(instruction, text, answer, "json_extract"), (name, age, city)


def _unit_conversion(rng: random.Random) -> Example:
    src, dst, factor = rng.choice(UNITS)
    value = rng.choice([rng.randint(2, 60), rng.randint(61, 400), rng.randint(2, 9) * 5])
    instruction = rng.choice([
        f"Convert {value} {src} to {dst}. Answer with the number only.",
        f"How many {dst} are in {value} {src}? Reply with just the number.",
        f"{value} {src} equals how many {dst}? Give only the number.",
    ])
    return _example(instruction, "", str(value * factor), "unit_conversion"), (value, src, dst)


def _sentiment(rng: random.Random) -> Example:
    positive = rng.random() < 0.5
    words = POSITIVE if positive else NEGATIVE
    a, b = rng.sample(words, 2)
    other = rng.choice(NEGATIVE if positive else POSITIVE)
    product = rng.choice(PRODUCTS)
    review = rng.choice([
        f"The {product} is {a} and {b}. {rng.choice(POS_END if positive else NEG_END)}",
        f"I expected it to be {other}, but the {product} turned out {a}. "
        f"{rng.choice(POS_END if positive else NEG_END)}",
        f"{rng.choice(POS_END if positive else NEG_END)} The {product} felt {a}.",
    ])
    instruction = rng.choice([
        "Classify the sentiment of the review. Answer with one word: positive or negative.",
        "Is this review positive or negative? Reply with a single lowercase word.",
    ])
    return (_example(instruction, review, "positive" if positive else "negative", "sentiment"),
            review)


def _short_answer(rng: random.Random, fact_filter: Callable[[str], bool]) -> Example:
    kind = rng.choice(sorted(FACTS))
    template, table = FACTS[kind]
    keys = [k for k in sorted(table) if fact_filter(f"{kind}:{k}")]
    key = rng.choice(keys)
    limit = rng.choice(["one word", "a single word", "at most two words"])
    prefix = rng.choice(["", "Quick question: ", "Trivia: ", "Please answer. "])
    suffix = rng.choice([", without a full sentence.", ". No explanation.", "."])
    instruction = f"{prefix}{template.format(key)} Answer in {limit}{suffix}"
    return _example(instruction, "", table[key], "short_answer"), (kind, key)


def _example(instruction: str, input_text: str, output: str, category: str) -> Example:
    return Example(id=Example.make_id(instruction, input_text, output), instruction=instruction,
                   output=output, input=input_text, category=category)


CATEGORIES = ("iso_date", "json_extract", "unit_conversion", "sentiment", "short_answer")


def _is_eval_fact(key: str) -> bool:
    """A fixed half of the short-answer facts is held out for dev/test."""
    return int(content_hash("fact-split", key), 16) % 2 == 0


def generate_examples(category: str, n: int, seed: int, pool: bool = True,
                      exclude_facts: frozenset = frozenset()) -> list[Example]:
    """`n` distinct examples of one skill; `pool=True` draws training facts, False held-out ones.
    Examples whose underlying fact (date, person, quantity, review, question) is in
    `exclude_facts` are skipped, so a paraphrase of an evaluation item never enters the pool."""
    return [e for e, _ in _generate(category, n, seed, pool, exclude_facts)]


def _generate(category: str, n: int, seed: int, pool: bool,
              exclude_facts: frozenset) -> list[tuple[Example, object]]:
    if category not in CATEGORIES:
        raise ValueError(f"unknown demo category {category!r}; known: {', '.join(CATEGORIES)}")
    rng = random.Random(f"{category}-{seed}-{pool}")
    makers = {
        "iso_date": _iso_date, "json_extract": _json_extract,
        "unit_conversion": _unit_conversion, "sentiment": _sentiment,
        "short_answer": lambda r: _short_answer(r, lambda k: _is_eval_fact(k) != pool),
    }
    out: dict[str, tuple[Example, object]] = {}
    for _ in range(n * 50):
        if len(out) == n:
            break
        ex, fact = makers[category](rng)
        if fact not in exclude_facts:
            out.setdefault(ex.id, (ex, fact))
    return list(out.values())


def build_splits(pool_per_category: int = 700, eval_per_category: int = 50,
                 seed: int = 0) -> dict[str, list[Example]]:
    """Pool, dev and test with no shared (instruction, input) pair between pool and evaluation."""
    splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for category in CATEGORIES:
        held_pairs = _generate(category, 2 * eval_per_category, seed, False, frozenset())
        held = [e for e, _ in held_pairs]
        held_facts = frozenset(fact for _, fact in held_pairs)
        pool = generate_examples(category, pool_per_category, seed + 1, True, held_facts)
        splits["train"] += pool
        splits["dev"] += held[:eval_per_category]
        splits["test"] += held[eval_per_category:]
    return splits


def task_toml(benchmark_data: str | None = None) -> str:
    """The demo's task.toml; `benchmark_data` (relative to the task folder) adds the benchmark
    decontamination and the forgetting check, which need local copies of the benchmark data."""
    text = TASK_TOML
    if benchmark_data:
        text += (f'benchmark_data = "{benchmark_data}"\n\n[benchmarks]\n'
                 "# the forgetting check: lm-eval's own tasks on local copies of the data (never "
                 f'in this repo)\ndata_dir = "{benchmark_data}"\nlimit = 40\n')
    return text


TASK_TOML = """\
# The bundled demo task (see README.md here): five small skills, generated by loop/data/demo_task.py.
name = "demo"
description = "ISO dates, JSON extraction, unit conversion, sentiment labels, short answers"
train = "train.jsonl"
dev = "dev.jsonl"
test = "test.jsonl"

[generation]
max_new_tokens = 48
batch_size = 32

[targeted]
# failures on dev -> nearest pool rows + fresh examples from the demo generator
strategies = ["corrections", "retrieval", "generator"]
generator = "demo"
n = 300
"""
CHECKOUT_TASK = Path(__file__).resolve().parents[2] / "datasets" / "demo" / "task.toml"


def write_task(directory: Path, benchmark_data: str | None = None) -> dict[str, int]:
    """The three JSONL splits, then task.toml (last, atomically: its presence means complete)."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, examples in build_splits().items():
        write_atomic(directory / f"{split}.jsonl", "".join(
            json.dumps({"id": e.id, "instruction": e.instruction, "input": e.input,
                        "output": e.output, "category": e.category}, ensure_ascii=False) + "\n"
            for e in examples))
        counts[split] = len(examples)
    write_atomic(directory / "task.toml", task_toml(benchmark_data))
    return counts


def demo_task(workspace: Path) -> Path:
    """The demo's task.toml: the committed copy in a source checkout; from an installed wheel
    (which ships this generator, not the data) generated once into `<workspace>/demo-task/`."""
    if CHECKOUT_TASK.is_file():
        return CHECKOUT_TASK
    target = Path(workspace) / "demo-task"
    if not (target / "task.toml").is_file():
        write_task(target)
    return target / "task.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--benchmark-data", default=None, metavar="REL_DIR",
                        help="benchmark data folder, relative to the task folder")
    args = parser.parse_args()
    print(write_task(args.directory, args.benchmark_data))


if __name__ == "__main__":
    main()
