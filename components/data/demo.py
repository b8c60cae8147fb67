"""The embedded demo dataset: short product reviews labelled negative / neutral / positive,
with a product category and a customer region to slice by. Generated deterministically from
a seed, so every machine gets the same rows, and written out as CSV files a user can open."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from tuneops.components.files import atomic_write_text

LABELS = ("negative", "neutral", "positive")
REGIONS = ("north_america", "europe", "asia_pacific", "latin_america")
# Unequal region shares, as real traffic has: slices of different support.
REGION_WEIGHTS = (0.4, 0.3, 0.2, 0.1)

PRODUCTS = {
    "electronics": ["headphones", "charger", "smartwatch", "speaker", "keyboard", "webcam", "router"],
    "kitchen": ["blender", "kettle", "frying pan", "coffee grinder", "toaster", "knife set", "air fryer"],
    "books": ["novel", "cookbook", "travel guide", "biography", "textbook", "comic", "poetry collection"],
    "clothing": ["jacket", "pair of jeans", "sweater", "pair of sneakers", "raincoat", "t-shirt", "scarf"],
    "toys": ["puzzle", "board game", "toy train", "doll house", "building set", "kite", "plush bear"],
}
ASPECTS = {
    "electronics": ["battery life", "sound quality", "connection", "screen", "build quality", "setup"],
    "kitchen": ["handle", "lid", "motor", "coating", "cleaning", "heating"],
    "books": ["story", "writing", "print quality", "binding", "recipes", "illustrations"],
    "clothing": ["fit", "fabric", "stitching", "colour", "sizing", "zipper"],
    "toys": ["pieces", "instructions", "paint", "durability", "packaging", "colours"],
}
NAMES = ["Maria", "John", "Aisha", "Wei", "Carlos", "Olga", "Kenji", "Fatima", "Liam", "Priya"]

OPENERS = {
    "positive": [
        "Really happy with this {p}.", "Love the {p}!", "Great {p}, exactly as described.",
        "This {p} exceeded my expectations.", "Best {p} I have bought in years.",
        "Bought the {p} for {n} and it was a hit.", "Five stars for this {p}.",
    ],
    "negative": [
        "Very disappointed with this {p}.", "Do not buy this {p}.", "The {p} broke after two days.",
        "Terrible {p}, total waste of money.", "I returned the {p} the same week.",
        "Bought the {p} for {n} and regretted it.", "One star, the {p} is junk.",
    ],
    "neutral": [
        "The {p} is okay.", "It's an average {p}.", "The {p} does the job, nothing more.",
        "Decent {p} for the price, I guess.", "The {p} arrived on time.",
        "Bought the {p} for {n}, it is fine.", "Mixed feelings about this {p}.",
    ],
}
ASPECT_LINES = {
    "positive": [
        "The {a} is excellent.", "The {a} is better than I hoped.", "Impressive {a}.",
        "The {a} works perfectly.", "I really like the {a}.", "Solid {a} and fast delivery.",
    ],
    "negative": [
        "The {a} is awful.", "The {a} stopped working quickly.", "Poor {a}.",
        "The {a} is cheap and flimsy.", "Customer service ignored my complaint about the {a}.",
        "The {a} is nothing like the photos.",
    ],
    "neutral": [
        "The {a} is as expected.", "The {a} is fine but not special.", "Nothing remarkable about the {a}.",
        "The {a} could be better, could be worse.", "The {a} is standard for this kind of product.",
        "No complaints about the {a}, no praise either.",
    ],
}
CLOSERS = {
    "positive": ["Would recommend.", "Will buy again!", "Worth every penny.", "", "Thanks!"],
    "negative": ["Avoid.", "Asking for a refund.", "Never again.", "", "Not worth it."],
    "neutral": ["It's fine.", "Might buy again, might not.", "", "Average overall.", "Okay for now."],
}
# Many ways to say good and bad: a pretrained encoder knows that "superb" and "stellar" agree,
# a bag of words has to see each one in training.
GOOD = [
    "great", "excellent", "superb", "fantastic", "wonderful", "outstanding", "brilliant", "terrific",
    "impressive", "solid", "delightful", "flawless", "sturdy", "reliable", "top-notch", "first-rate",
    "lovely", "marvellous", "stellar", "splendid", "well made", "a joy to use", "spot on", "perfect",
]
BAD = [
    "awful", "terrible", "dreadful", "poor", "flimsy", "useless", "disappointing", "shoddy", "horrible",
    "defective", "faulty", "mediocre at best", "a letdown", "abysmal", "subpar", "broken", "pathetic",
    "unreliable", "frustrating", "cheaply made", "a nightmare", "worthless", "wobbly", "lousy",
]
# Reviews whose words point both ways, where order and negation decide the label: the part of the
# task a bag of words gets wrong and a fine-tuned encoder learns.
COMPOSED_OPENERS = [
    "I bought this {p} last month.", "Got the {p} as a gift.", "Here is my take on the {p}.",
    "Used the {p} for a few weeks now.", "Ordered the {p} after reading reviews.", "Update on the {p}.",
]
COMPOSED = {
    "positive": [
        "I feared the {a} would be {bad}, but it turned out {good}.",
        "The {a} is not {bad} at all; honestly it is {good}.",
        "Others called the {a} {bad}. Mine is {good}.",
        "Expected {bad}, got {good}: the {a} surprised me.",
        "Never {bad}, always {good}, that is the {a}.",
    ],
    "negative": [
        "I hoped the {a} would be {good}, but it turned out {bad}.",
        "The {a} is not {good} at all; honestly it is {bad}.",
        "Others called the {a} {good}. Mine is {bad}.",
        "Expected {good}, got {bad}: the {a} let me down.",
        "Never {good}, always {bad}, that is the {a}.",
    ],
    "neutral": [
        "Some days the {a} is {good}, some days {bad}.",
        "The {a} is neither {good} nor {bad}.",
        "Half of it is {good}, the {a} is {bad}, so it evens out.",
        "Not {good}, not {bad}; the {a} just exists.",
        "The {a}: {good} in theory, {bad} in practice, average overall.",
    ],
}
# Regional writing habits: slices differ in style as well as in size.
REGION_SUFFIX = {
    "north_america": ["", "", " Shipping was quick."],
    "europe": ["", " Delivery took a while.", ""],
    "asia_pacific": ["", " Packaging was neat.", ""],
    "latin_america": ["", " Arrived late.", " Customs took long."],
}
# Drifted traffic: a new product line and a different way of writing about it.
DRIFT_PRODUCTS = ["drone", "electric scooter", "3d printer", "vr headset", "robot vacuum"]
DRIFT_LINES = [
    "Firmware {v} bricked the {p} twice, support ticket #{t} still open after {d} days!!!",
    "Ordered {k} units of the {p} for our office; {f} of them DOA. RMA pending.",
    "{p} app keeps crashing on android {v}; pairing over bluetooth fails with error 0x{t}.",
    "Compared the {p} against 3 rivals over {d} days: latency {k}ms, battery {f}h, meh.",
]


def generate_reviews(rows: int = 3600, seed: int = 7, label_noise: float = 0.02) -> pd.DataFrame:
    """Return ``rows`` synthetic reviews with columns id, text, label, product_category, region.

    The same ``rows`` and ``seed`` always give the same frame.
    """
    rng = random.Random(seed)
    categories = list(PRODUCTS)
    records = []
    for index in range(rows):
        category = categories[index % len(categories)]
        label = rng.choices(LABELS, weights=(0.3, 0.25, 0.45))[0]
        region = rng.choices(REGIONS, weights=REGION_WEIGHTS)[0]
        text = _review(rng, label, category, region)
        if rng.random() < label_noise:
            label = rng.choice([other for other in LABELS if other != label])
        records.append(
            {"id": f"r{index:06d}", "text": text, "label": label, "product_category": category, "region": region}
        )
    return pd.DataFrame.from_records(records)


def generate_drifted_texts(rows: int, seed: int = 11) -> list[str]:
    """Texts unlike the demo reviews (new products, jargon, numbers): traffic that should drift."""
    rng = random.Random(seed)
    texts = []
    for _ in range(rows):
        line = rng.choice(DRIFT_LINES)
        texts.append(
            line.format(
                p=rng.choice(DRIFT_PRODUCTS),
                v=f"{rng.randint(1, 14)}.{rng.randint(0, 9)}",
                t=rng.randint(1000, 99999),
                d=rng.randint(2, 60),
                k=rng.randint(2, 500),
                f=rng.randint(1, 12),
            )
        )
    return texts


def write_demo_dataset(directory: Path, rows: int = 3600, seed: int = 7) -> Path:
    """Write the demo reviews to ``directory/reviews-<rows>-<seed>.csv`` (once) and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"reviews-{rows}-{seed}.csv"
    if not target.exists():
        # Atomic: two runs starting at once on a new home both write it, neither reads half of it.
        atomic_write_text(target, generate_reviews(rows=rows, seed=seed).to_csv(index=False))
    return target


def _review(rng: random.Random, label: str, category: str, region: str) -> str:
    product = rng.choice(PRODUCTS[category])
    aspect, second = rng.sample(ASPECTS[category], 2)
    if rng.random() < 0.45:
        parts = [
            rng.choice(COMPOSED_OPENERS).format(p=product),
            rng.choice(COMPOSED[label]).format(a=aspect, good=rng.choice(GOOD), bad=rng.choice(BAD)),
        ]
    else:
        parts = [rng.choice(OPENERS[label]).format(p=product, n=rng.choice(NAMES))]
        parts.append(rng.choice(ASPECT_LINES[label]).format(a=aspect))
        if rng.random() < 0.4:
            # A second aspect, sometimes of another tone: real reviews are rarely one-note.
            tone = label if rng.random() < 0.7 else rng.choice(LABELS)
            parts.append(rng.choice(ASPECT_LINES[tone]).format(a=second))
        closer = rng.choice(CLOSERS[label])
        if closer:
            parts.append(closer)
    text = " ".join(parts) + rng.choice(REGION_SUFFIX[region])
    if rng.random() < 0.1:
        text = text.lower()
    return text
