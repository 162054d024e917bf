"""Request and response bodies of the ranking API (pydantic): the OpenAPI spec the app publishes is the contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from graphrec.data.config import EVENT_TYPES

Id = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | Annotated[str, StringConstraints(min_length=1, max_length=256)]
EARLIEST, LATEST = datetime(1970, 1, 2, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    """A timestamp in UTC (one without a zone is read as UTC), within the years the features can represent."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"timestamp {value.isoformat()} is outside {EARLIEST.year}-{LATEST.year}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Context(Strict):
    """Where and when the page is shown."""

    device: Annotated[str, StringConstraints(max_length=64)] | None = Field(None, examples=["mobile"])
    timestamp: datetime | None = Field(None, description="the page view's time (default: now); UTC if no zone")
    locale: Annotated[str, StringConstraints(max_length=35)] | None = Field(None, examples=["de-DE"])
    session_id: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="the shopper's session: its logged events and `recent_events` feed the session features"
    )

    @field_validator("timestamp")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class RecentEvent(Strict):
    """An event of the current session not yet in the logs: exactly one of item_id and content_id."""

    item_id: Id | None = None
    content_id: Id | None = None
    event_type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    timestamp: datetime | None = Field(None, description="default: just before the request; UTC if no zone")

    @field_validator("timestamp")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    @model_validator(mode="after")
    def _one_target(self) -> RecentEvent:
        if (self.item_id is None) == (self.content_id is None):
            raise ValueError("a recent event names exactly one of item_id and content_id")
        return self


class Diversity(Strict):
    """Optional re-ranking of the slots."""

    mmr_lambda: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="MMR trade-off over module embeddings (1: relevance only)"
    )
    max_per_type: int | None = Field(None, ge=1, le=1000, description="at most this many modules of one type")


class RankRequest(Strict):
    """Rank homepage modules for a user."""

    user_id: Id
    candidates: list[Id] | None = Field(None, description="modules to rank (default: every live module)")
    slots: int | None = Field(None, ge=1, le=10_000, description="modules to return (default: the server's)")
    context: Context | None = None
    recent_events: list[RecentEvent] = Field(default_factory=list)
    exclude: list[Id] = Field(default_factory=list, description="modules never to return")
    diversity: Diversity | None = None
    reasons: bool = Field(
        True, description="attach reasons (false saves their occlusion pass, about a third of a page)"
    )


class Reason(BaseModel):
    """Why a module is where it is, in words a merchandiser reads, and the logit its feature group added."""

    code: str
    text: str
    weight: float


class RankedModule(BaseModel):
    content_id: Id
    score: float = Field(description="P(click | the module is seen) from the ranker; popularity under a fallback")
    rank: int
    reasons: list[Reason]
    propensity: float = Field(description="probability of this pick given the picks above it (1 without exploration)")


class RankResponse(BaseModel):
    request_id: str
    user_id: Id
    modules: list[RankedModule]
    model_version: str | None
    embedding_version: str | None
    arm: str
    fallback: Literal["cold_start", "degraded"] | None

    @classmethod
    def of(cls, page) -> RankResponse:
        """The response of a `serving.service.Page`."""
        return cls(
            request_id=page.request_id,
            user_id=page.user_id,
            modules=page.modules,
            model_version=page.model_version,
            embedding_version=page.embedding_version,
            arm=page.arm,
            fallback=page.fallback,
        )


class FeedbackRequest(Strict):
    """A shopper's action on a module; the next rank call honours it."""

    user_id: Id
    content_id: Id
    action: Literal["more_like_this", "hide", "hide_similar"]
    timestamp: datetime | None = None

    @field_validator("timestamp")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class FeedbackResponse(BaseModel):
    recorded: bool
    user_id: Id
    content_id: Id
    action: str


class ReloadResponse(BaseModel):
    reloaded: bool
    arms: dict[str, str]
    embedding_version: str | None
    seconds: float
