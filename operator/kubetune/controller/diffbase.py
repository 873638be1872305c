"""kopf's diff base (its copy of the last handled spec, kept in an annotation), built from only the stanzas it
compares.

kopf builds the essence of every watch event of every FineTuneJob (each status patch is one) by deep-copying
the whole object and then dropping status and most metadata. A FineTuneJob's status holds its plan with the
memory breakdown and the runners-up, and its metadata the managed fields: that copy was a twentieth of the
operator's CPU at 1,000 jobs. The essence is kopf's own, built from a body without what it would drop."""

from collections.abc import Iterable
from typing import Any, cast

import kopf

# What kopf's essence keeps of the metadata (labels, annotations), and what its key convention reads.
_KEPT_METADATA = ("labels", "annotations", "ownerReferences")


class SlimDiffBase(kopf.AnnotationsDiffBaseStorage):
    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        extra = list(extra_fields or [])
        metadata = body.get("metadata", {})
        kept: dict[str, Any] = {key: value for key, value in body.items()
                                if key != "status" or any(_in_status(field) for field in extra)}
        kept["metadata"] = {key: metadata[key] for key in _KEPT_METADATA if key in metadata}
        return super().build(body=kopf.Body(cast(kopf.RawBody, kept)), extra_fields=extra)


def _in_status(field: Any) -> bool:
    path = field.split(".") if isinstance(field, str) else list(field)
    return bool(path) and path[0] == "status"
