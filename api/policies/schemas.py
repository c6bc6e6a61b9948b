"""Request and response bodies of /v1/admin/policies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from api.common.schemas import Id, Name, RequestModel

BuiltInDetector = Literal["email", "phone", "payment_card", "iban", "national_id", "ip_address", "secret"]
Action = Literal["block", "redact", "allow"]
Ids = Annotated[list[Id], Field(max_length=1000)]


class RuleIn(RequestModel):
    detector: BuiltInDetector | Literal["regex"]
    action: Action
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] | None = Field(
        None, description="A regex rule's name: it names the rule in refusals and records, and its placeholder.")
    pattern: Annotated[str, Field(min_length=1, max_length=2000)] | None = Field(
        None, description="A regex rule's expression (RE2 syntax: matched in linear time).")

    @model_validator(mode="after")
    def _regex_fields(self) -> RuleIn:
        if (self.detector == "regex") != (self.pattern is not None and self.name is not None):
            raise ValueError("a regex rule needs a name and a pattern; a built-in detector takes neither")
        return self


Rules = Annotated[list[RuleIn], Field(min_length=1, max_length=50)]


class PolicyCreate(RequestModel):
    name: Name
    rules: Rules
    organizations: Ids = []
    roles: Ids = []
    keys: Ids = []


class PolicyUpdate(RequestModel):
    name: Name | None = None
    rules: Rules | None = None
    organizations: Ids | None = None
    roles: Ids | None = None
    keys: Ids | None = None


class PolicyOut(BaseModel):
    object: Literal["policy"] = "policy"
    id: int
    name: str
    rules: list[RuleIn]
    organizations: list[int]
    roles: list[int]
    keys: list[int]
    created: int
    updated: int
