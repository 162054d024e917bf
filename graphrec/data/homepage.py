"""The generated shop's homepage: a module pool, a logging policy with propensities, and the true click model.

Clicks follow the position-based model (Richardson et al. 2007; Chuklin et al. 2015, "Click Models for Web
Search"): P(click) = P(examine | slot, device) x P(relevant | user, module, context). Relevance is logistic in a
sum of parts (`ClickModel.logit_parts`): the user's hidden taste and the session's intent against the module's
hidden factors (the mean of its featured items' factors), price fit, module quality, novelty, fatigue and context.
`ClickModel` is saved beside the shop (`click_model.npz`), so any ordering of any logged request can be scored
for its expected clicks (`expected_clicks`), and the logging policy's distribution recomputed (`policy_logits`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from graphrec.data.config import DEVICES, MODULE_TYPES, HomepageConfig

DAY = 86_400
# Words for each end of a hidden style dimension; module titles name the dimension their factors lean to most
# (with noise), so titles carry information about the hidden factors without spelling them out.
STYLE_WORDS = (
    ("sporty", "formal"),
    ("minimal", "bold"),
    ("classic", "trendy"),
    ("cosy", "sleek"),
    ("outdoor", "urban"),
    ("vintage", "modern"),
    ("playful", "elegant"),
    ("natural", "glam"),
)
_EXPOSURE_TIME_BITS = 32
_TIME_ORIGIN_DAYS = 400  # exposure keys count seconds from this many days before the shop's start


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class ModulePool:
    """The homepage's content modules over the whole period (index m = module m)."""

    module_type: np.ndarray  # [M] index into MODULE_TYPES
    featured: list[np.ndarray]  # per module: indexes of featured items
    factor: np.ndarray  # [M, D] unit vectors: normalised mean of the featured items' hidden factors
    price: np.ndarray  # [M] mean price level of the featured items
    quality: np.ndarray  # [M] the non-personal part of relevance
    launch: np.ndarray  # [M] epoch seconds (00:00 UTC of the launch day)
    end: np.ndarray  # [M] epoch seconds, exclusive
    mix: np.ndarray  # [M, C] share of each category among the featured items
    titles: list[str]


def build_module_pool(
    config: HomepageConfig,
    n_modules: int,
    days: int,
    start: int,
    rng: np.random.Generator,
    *,
    item_factor: np.ndarray,
    item_price: np.ndarray,
    item_category: np.ndarray,
    item_brand: np.ndarray,
    popularity: np.ndarray,
    category_names: list[str],
    brand_names: list[str],
    item_launch_day: np.ndarray | None = None,
) -> ModulePool:
    """Draw the module pool: types, live periods, featured items, hidden factors and quality. `item_launch_day`
    ([I], days from the start; None: every item from the start) keeps items out of modules launched before them."""
    n_items, dim = item_factor.shape
    n_cat = len(category_names)
    shares = np.array([config.module_types.get(t, 0.0) for t in MODULE_TYPES])
    module_type = rng.choice(len(MODULE_TYPES), size=n_modules, p=shares / shares.sum())

    # Live periods: whole days; evergreen modules span the period, the others launch every day (some before the
    # start, so the first day has a full pool) and live a log-normal number of days.
    lifetime = np.maximum(1, np.round(rng.lognormal(np.log(config.lifetime_days), 0.6, n_modules))).astype(np.int64)
    lead = int(2 * config.lifetime_days)
    launch_day = rng.permutation(n_modules) % (days + lead) - lead  # spread evenly: launches on every day
    evergreen = rng.random(n_modules) < config.evergreen_share
    launch_day[evergreen], lifetime[evergreen] = -_TIME_ORIGIN_DAYS // 2, days + _TIME_ORIGIN_DAYS
    live = _live_counts(launch_day, lifetime, days)
    # Every day needs a full page of candidates: where a day falls short, modules become evergreen.
    for m in rng.permutation(np.flatnonzero(~evergreen)):
        if live.min() >= 2 * config.max_slots:
            break
        launch_day[m], lifetime[m] = -_TIME_ORIGIN_DAYS // 2, days + _TIME_ORIGIN_DAYS
        live = _live_counts(launch_day, lifetime, days)
    item_launch_day = np.zeros(n_items, dtype=np.int64) if item_launch_day is None else item_launch_day
    by_category = [np.flatnonzero(item_category == c) for c in range(n_cat)]
    by_brand_order = np.argsort(item_brand, kind="stable")
    brand_start = np.searchsorted(item_brand[by_brand_order], np.arange(len(brand_names) + 1))
    category_mass = np.bincount(item_category, weights=popularity, minlength=n_cat)
    brand_mass = np.bincount(item_brand, weights=popularity, minlength=len(brand_names))
    log_pop = np.log(popularity)
    popular = np.argsort(-popularity, kind="stable")[: max(200, n_items // 10)]

    def styled(pool: np.ndarray, count: int, direction: np.ndarray, strength: float, day: int) -> np.ndarray:
        # Popular items that fit a style direction and are on sale by the module's launch day: the way a
        # merchandiser fills a themed module (the catalogue's popular items where none of the pool is yet).
        pool = pool[item_launch_day[pool] <= max(day, 0)]  # items launch from day 0, modules before it too
        if not len(pool):
            pool = popular[item_launch_day[popular] <= max(day, 0)]
        score = log_pop[pool] + strength * (item_factor[pool] @ direction) + rng.gumbel(size=len(pool))
        return np.sort(pool[np.argsort(-score, kind="stable")[: min(count, len(pool))]])

    featured: list[np.ndarray] = []
    titles: list[str] = []
    for kind, day in zip(module_type, launch_day, strict=True):  # a couple of thousand modules at most
        direction = rng.normal(size=dim)
        direction /= np.linalg.norm(direction)
        name = MODULE_TYPES[kind]
        category = rng.choice(n_cat, p=category_mass / category_mass.sum())
        if name == "carousel":
            items = styled(by_category[category], int(rng.integers(12, 25)), direction, 1.0, day)
        elif name == "banner":
            second = rng.choice(n_cat, p=category_mass / category_mass.sum())
            pool = np.union1d(by_category[category], by_category[second])
            items = styled(pool, int(rng.integers(4, 9)), direction, 2.0, day)
        elif name == "teaser":
            items = styled(by_category[category], int(rng.integers(1, 5)), direction, 2.0, day)
        elif name == "editorial":
            items = styled(popular, int(rng.integers(8, 17)), direction, 4.0, day)
        else:  # brand_page
            brand = rng.choice(len(brand_names), p=brand_mass / brand_mass.sum())
            pool = by_brand_order[brand_start[brand] : brand_start[brand + 1]]
            items = styled(pool, 16, direction, 0.5, day)
            category = int(np.bincount(item_category[items], minlength=n_cat).argmax())
        featured.append(items)
        titles.append(_title(name, items, item_factor, category_names[category], brand_names, item_brand, rng))

    factor = np.stack([item_factor[x].mean(axis=0) for x in featured])
    factor /= np.maximum(np.linalg.norm(factor, axis=1, keepdims=True), 1e-9)
    price = np.array([item_price[x].mean() for x in featured])
    mix = np.zeros((n_modules, n_cat), dtype=np.float32)
    for m, items in enumerate(featured):
        np.add.at(mix[m], item_category[items], 1.0 / len(items))
    quality = rng.normal(0.0, config.quality_std, n_modules)
    launch = start + launch_day * DAY
    return ModulePool(module_type, featured, factor, price, quality, launch, launch + lifetime * DAY, mix, titles)


def _live_counts(launch_day: np.ndarray, lifetime: np.ndarray, days: int) -> np.ndarray:
    day = np.arange(days)[:, None]
    return ((launch_day[None, :] <= day) & (day < launch_day[None, :] + lifetime[None, :])).sum(axis=1)


def _title(name, items, item_factor, category, brand_names, item_brand, rng) -> str:
    lean = item_factor[items].mean(axis=0) + rng.normal(0.0, 0.15, item_factor.shape[1])
    dim = int(np.abs(lean).argmax())
    words = STYLE_WORDS[dim % len(STYLE_WORDS)]
    style = words[0] if lean[dim] > 0 else words[1]
    if name == "brand_page":
        return f"{brand_names[int(np.bincount(item_brand[items]).argmax())]}: {style} favourites"
    if name == "editorial":
        return f"The {style} edit"
    if name == "banner":
        return f"{style.capitalize()} {category} week"
    if name == "teaser":
        return f"Just in: {style} {category}"
    return f"{style.capitalize()} {category} picks"


def sample_policy(
    logits: np.ndarray, slots: np.ndarray, exploration: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fill each request's slots top to bottom: with probability `exploration` a uniform pick among the remaining
    candidates, otherwise a softmax pick over their logits. Returns the picked candidate indexes [n, S] (-1 past a
    request's slots) and each pick's propensity, its probability given the picks above it.

    Args:
        logits: [n, A] the policy's logits over A candidates (-inf: not a candidate).
        slots: [n] slots to fill per request (at most the number of candidates).
    """
    n, width = logits.shape
    depth = int(slots.max()) if n else 0
    candidates = np.isfinite(logits).sum(axis=1)
    weight = np.exp(logits - logits.max(axis=1, keepdims=True))  # [n, A]
    total = weight.sum(axis=1)
    # The Plackett-Luce order (Gumbel-max, repeated) gives every softmax pick: the first candidate in it not yet
    # taken. Uniform picks only remove candidates, and the order restricted to the rest is again Plackett-Luce.
    keys = logits + rng.gumbel(size=logits.shape)
    prefix = min(width, 2 * depth)
    top = (
        np.argpartition(-keys, prefix - 1, axis=1)[:, :prefix] if prefix < width else np.tile(np.arange(width), (n, 1))
    )
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
    taken = np.zeros((n, width), dtype=bool)
    pointer = np.zeros(n, dtype=np.int64)
    removed = np.zeros(n)
    picks = np.full((n, depth), -1, dtype=np.int64)
    propensity = np.zeros((n, depth))
    for s in range(depth):
        live = s < slots
        explore = live & (rng.random(n) < exploration)
        pick = np.full(n, -1, dtype=np.int64)
        rows = np.flatnonzero(explore)
        while len(rows):  # rejection: at most S of A candidates are taken
            draw = rng.integers(0, width, len(rows))
            ok = np.isfinite(logits[rows, draw]) & ~taken[rows, draw]
            pick[rows[ok]] = draw[ok]
            rows = rows[~ok]
        rows = np.flatnonzero(live & ~explore)
        while len(rows):
            candidate = order[rows, pointer[rows]]
            ok = ~taken[rows, candidate] & np.isfinite(logits[rows, candidate])
            pick[rows[ok]] = candidate[ok]
            pointer[rows] += 1
            rows = rows[~ok]
        done = np.flatnonzero(live)
        chosen = pick[done]
        remaining_weight = np.maximum(total[done] - removed[done], 1e-300)
        propensity[done, s] = (1 - exploration) * weight[done, chosen] / remaining_weight + exploration / (
            candidates[done] - s
        )
        taken[done, chosen] = True
        removed[done] += weight[done, chosen]
        picks[done, s] = chosen
    return picks, propensity


def policy_distribution(logits: np.ndarray, taken: np.ndarray, exploration: float) -> np.ndarray:
    """The logging policy's probability of each candidate for the next slot, given the candidates `taken` above
    it: [A] probabilities summing to one over the remaining candidates."""
    open_ = np.isfinite(logits) & ~taken
    weight = np.where(open_, np.exp(logits - logits[open_].max()), 0.0)
    return (1 - exploration) * weight / weight.sum() + exploration * open_ / open_.sum()


@dataclass
class ClickModel:
    """The generated homepage's true click model and logging policy, for scoring any ordering of any request.

    Index conventions: users, modules and requests are rows of the arrays below; `request_index` and
    `module_index` map the logged `request_id` / `content_id` to them.
    """

    config: dict
    start: int  # epoch seconds of the shop's first day
    user_ids: np.ndarray  # [U] str
    user_taste: np.ndarray  # [U, D]
    user_price: np.ndarray  # [U]
    user_interests: np.ndarray  # [U, I] category indexes
    user_interest_weight: np.ndarray  # [U, I]
    content_ids: np.ndarray  # [M] str
    module_type: np.ndarray  # [M]
    module_factor: np.ndarray  # [M, D]
    module_price: np.ndarray  # [M]
    module_quality: np.ndarray  # [M]
    module_launch: np.ndarray  # [M] epoch seconds
    module_end: np.ndarray  # [M] epoch seconds, exclusive
    module_mix: np.ndarray  # [M, C]
    policy_quality: np.ndarray  # [M] the earlier ranker's estimate of module quality
    request_ids: np.ndarray  # [R]
    request_user: np.ndarray  # [R] user index
    request_time: np.ndarray  # [R] epoch seconds
    request_device: np.ndarray  # [R] index into DEVICES
    request_intent: np.ndarray  # [R, D] the session's intent
    request_slots: np.ndarray  # [R]
    exposure_keys: np.ndarray  # sorted (user * M + module) << 32 | seconds since origin, one per examination

    @property
    def homepage(self) -> HomepageConfig:
        return HomepageConfig(**self.config)

    # --- lookups -------------------------------------------------------------------------------------------
    def request_index(self, request_ids) -> np.ndarray:
        """Row of each logged request id; raises KeyError for an id the model does not hold."""
        ids = np.asarray(request_ids, dtype=np.int64)
        index = np.searchsorted(self.request_ids, ids)
        if len(ids) and (index.max() >= len(self.request_ids) or (self.request_ids[index] != ids).any()):
            raise KeyError("request ids not in the click model")
        return index

    def module_index(self, content_ids) -> np.ndarray:
        """Row of each content id (-1 where unknown)."""
        order = np.argsort(self.content_ids)
        ids = np.asarray(content_ids, dtype=self.content_ids.dtype)
        pos = np.clip(np.searchsorted(self.content_ids[order], ids), 0, len(order) - 1)
        found = self.content_ids[order][pos] == ids
        return np.where(found, order[pos], -1)

    def active(self, requests: np.ndarray) -> np.ndarray:
        """[n, M] whether each module is live at each request's time (its candidates)."""
        t = self.request_time[requests][:, None]
        return (self.module_launch[None, :] <= t) & (t < self.module_end[None, :])

    # --- truth ---------------------------------------------------------------------------------------------
    def earlier_examinations(self, requests: np.ndarray, modules: np.ndarray) -> np.ndarray:
        """How often the request's user examined the module before the request (any shape; broadcast)."""
        n_modules = len(self.content_ids)
        pair = self.request_user[requests].astype(np.int64) * n_modules + modules
        origin = self.start - _TIME_ORIGIN_DAYS * DAY
        lo = pair << _EXPOSURE_TIME_BITS
        hi = lo + (self.request_time[requests] - origin)
        return np.searchsorted(self.exposure_keys, hi) - np.searchsorted(self.exposure_keys, lo)

    def logit_parts(self, requests: np.ndarray, modules: np.ndarray) -> dict[str, np.ndarray]:
        """The relevance logit's parts for (request, module) pairs of equal shape; their sum plus `base` is the
        logit of P(relevant)."""
        cfg = self.homepage
        requests, modules = np.broadcast_arrays(requests, modules)
        user = self.request_user[requests]
        factor = self.module_factor[modules]
        taste = np.einsum("...d,...d->...", self.user_taste[user], factor)
        intent = np.einsum("...d,...d->...", self.request_intent[requests], factor)
        age_days = (self.request_time[requests] - self.module_launch[modules]) / DAY
        hour = (self.request_time[requests] % DAY) / 3_600
        device_effect = np.array([cfg.device_effect[d] for d in DEVICES])
        return {
            "base": np.full(requests.shape, cfg.base_logit),
            "taste": cfg.taste_weight * taste,
            "intent": cfg.intent_weight * intent,
            "price": -cfg.price_weight * np.abs(self.user_price[user] - self.module_price[modules]),
            "quality": self.module_quality[modules],
            "novelty": cfg.novelty_boost * np.exp(-np.maximum(age_days, 0) / cfg.novelty_days),
            "fatigue": -cfg.fatigue_weight * np.log1p(self.earlier_examinations(requests, modules)),
            "context": cfg.hour_effect * np.cos(2 * np.pi * (hour - 20) / 24)
            + device_effect[self.request_device[requests]],
        }

    def relevance(self, requests: np.ndarray, modules: np.ndarray) -> np.ndarray:
        """P(relevant | user, module, context) for (request, module) pairs."""
        return sigmoid(sum(self.logit_parts(requests, modules).values()))

    def examination_curve(self, slots: int) -> np.ndarray:
        """[devices, slots] P(examine | slot, device) on a page of at least `slots` slots (order of `DEVICES`)."""
        power = np.array([self.homepage.examination_power[d] for d in DEVICES])
        return 1.0 / (np.arange(slots)[None, :] + 1.0) ** power[:, None]

    def examination(self, requests: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """P(examine | slot, device), 0 past the request's page."""
        requests, slots = np.broadcast_arrays(requests, slots)
        curve = self.examination_curve(int(slots.max()) + 1 if slots.size else 1)
        exam = curve[self.request_device[requests], slots]
        return np.where(slots < self.request_slots[requests], exam, 0.0)

    def expected_clicks(self, requests: np.ndarray, orders: np.ndarray) -> np.ndarray:
        """Expected clicks of each request when its slots show `orders` ([n, S] module indexes top to bottom; -1
        for an empty slot): the sum over slots of P(examine) x P(relevant)."""
        requests = np.asarray(requests)
        orders = np.asarray(orders)
        slots = np.arange(orders.shape[1])[None, :]
        exam = self.examination(requests[:, None], slots)
        rel = self.relevance(requests[:, None], np.maximum(orders, 0))
        return np.where(orders >= 0, exam * rel, 0.0).sum(axis=1)

    # --- the logging policy --------------------------------------------------------------------------------
    def category_affinity(self, requests: np.ndarray, modules: np.ndarray | None = None) -> np.ndarray:
        """[n, M] the user's weight on each module's categories (one hop: user -> category <- module); only the
        columns of `modules` where given."""
        user = self.request_user[requests]
        mix = self.module_mix.T if modules is None else self.module_mix[modules].T  # [C, M]
        return np.einsum("ni,nim->nm", self.user_interest_weight[user], mix[self.user_interests[user]])

    def policy_logits(self, requests: np.ndarray, modules: np.ndarray | None = None) -> np.ndarray:
        """[n, M] the logging policy's logits (-inf for modules not live): a noisy earlier ranker on module
        quality, the user's category affinity and freshness. Only the columns of `modules` where given."""
        cfg = self.homepage
        modules = np.arange(len(self.content_ids)) if modules is None else modules
        t = self.request_time[requests][:, None]
        launch = self.module_launch[modules][None, :]
        fresh = np.exp(-np.maximum(t - launch, 0) / (cfg.novelty_days * DAY))
        logits = (
            cfg.policy_quality_weight * self.policy_quality[modules][None, :]
            + cfg.policy_affinity_weight * self.category_affinity(requests, modules)
            + cfg.policy_novelty_weight * fresh
        )
        live = (launch <= t) & (t < self.module_end[modules][None, :])
        return np.where(live, logits, -np.inf)

    # --- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model as one .npz (no pickled objects)."""
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("config", "start")}
        arrays["user_ids"] = arrays["user_ids"].astype(str)
        arrays["content_ids"] = arrays["content_ids"].astype(str)
        meta = np.array(json.dumps({"config": self.config, "start": int(self.start), "format": 1}))
        with open(path, "wb") as handle:
            np.savez_compressed(handle, meta=meta, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ClickModel:
        """Read a model written by `save` (a shop directory or the .npz itself)."""
        path = Path(path)
        if path.is_dir():
            path = path / "click_model.npz"
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {f.name: data[f.name] for f in fields(cls) if f.name not in ("config", "start")}
        return cls(config=meta["config"], start=meta["start"], **arrays)


def examination_keys(model: ClickModel, examined: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Sorted keys of every examination ((user, module) pair and time): the index `earlier_examinations` reads."""
    rows, slots = np.nonzero(examined)
    pair = model.request_user[rows].astype(np.int64) * len(model.content_ids) + shown[rows, slots]
    seconds = model.request_time[rows] - (model.start - _TIME_ORIGIN_DAYS * DAY)
    return np.sort((pair << _EXPOSURE_TIME_BITS) + seconds)


REFERENCE_ORDERS = ("oracle", "one_hop", "non_personal")


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), from ranks: the Mann-Whitney U statistic."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass
class ReferenceScorer:
    """Scores of the three reference orders computed from the click model's own truth.

    - `oracle`: the true relevance (personal parts, fatigue, novelty included).
    - `non_personal`: each module's true relevance averaged over the shop's users, at the request's time
      (quality and novelty; no user signal at all).
    - `one_hop`: the non-personal score plus the best linear use of the user's true category affinity to the
      module's categories (user -> category <- module) and of fatigue: what hand-made one-hop features can reach
      at best.
    """

    model: ClickModel
    population_logit: np.ndarray  # [M] logit of the module's mean relevance over users, without novelty/context
    affinity_weight: float

    @classmethod
    def fit(cls, model: ClickModel, sample: int = 2_000, seed: int = 0) -> ReferenceScorer:
        """Estimate the population means and the affinity weight on a sample of requests x live modules."""
        rng = np.random.default_rng(seed)
        requests = np.sort(rng.choice(len(model.request_ids), size=min(sample, len(model.request_ids)), replace=False))
        modules = np.arange(len(model.content_ids))
        parts = model.logit_parts(requests[:, None], modules[None, :])
        personal = parts["taste"] + parts["intent"] + parts["price"]  # [n, M]
        relevant = sigmoid(parts["base"] + personal + parts["quality"])
        mean_relevance = relevant.mean(axis=0)
        population_logit = np.log(mean_relevance / (1 - mean_relevance))
        live = model.active(requests)
        affinity = model.category_affinity(requests)
        # Least squares of the personal logit on the category affinity, both centred per module, over live pairs.
        personal_c = personal - personal.mean(axis=0, keepdims=True)
        affinity_c = affinity - affinity.mean(axis=0, keepdims=True)
        weight = float((personal_c * affinity_c)[live].sum() / max((affinity_c**2)[live].sum(), 1e-12))
        return cls(model, population_logit, weight)

    def scores(self, kind: str, requests: np.ndarray, modules: np.ndarray | None = None) -> np.ndarray:
        """[n, M] scores of `kind` for requests over every module (-inf where not live), or [n] for given pairs."""
        model = self.model
        if modules is None:
            grid = np.arange(len(model.content_ids))[None, :]
            out = self._scores(kind, requests[:, None], grid)
            return np.where(model.active(requests), out, -np.inf)
        return self._scores(kind, requests, modules)

    def _scores(self, kind: str, requests: np.ndarray, modules: np.ndarray) -> np.ndarray:
        parts = self.model.logit_parts(requests, modules)
        if kind == "oracle":
            return sum(parts.values())
        non_personal = self.population_logit[modules] + parts["novelty"]
        if kind == "non_personal":
            return np.broadcast_to(non_personal, parts["base"].shape)
        if kind == "one_hop":
            affinity = self._pair_affinity(requests, modules)
            return non_personal + self.affinity_weight * affinity + parts["fatigue"]
        raise ValueError(f"unknown reference order {kind!r}; expected one of {REFERENCE_ORDERS}")

    def _pair_affinity(self, requests: np.ndarray, modules: np.ndarray) -> np.ndarray:
        model = self.model
        requests, modules = np.broadcast_arrays(requests, modules)
        user = model.request_user[requests]
        weight = model.user_interest_weight[user]  # [..., I]
        categories = model.user_interests[user]  # [..., I]
        return (weight * model.module_mix[modules[..., None], categories]).sum(axis=-1)


def top_orders(scores: np.ndarray, slots: int) -> np.ndarray:
    """[n, slots] the highest-scoring candidates top to bottom (-1 where fewer candidates are live)."""
    slots = min(slots, scores.shape[1])
    top = np.argpartition(-scores, slots - 1, axis=1)[:, :slots]
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, -1)
