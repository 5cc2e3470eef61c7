"""VirtualService delegation in route generation: a root's delegating route replaced by its delegate's routes.

Istio's semantics (istio.io VirtualService reference, `HTTPRoute.delegate` and `Delegate`; pilot's
`mergeVirtualServicesIfNeeded` and `mergeHTTPRoute` in pilot/pkg/model/virtualservice.go):

- A delegate is a VirtualService without hosts, found by (namespace, name); the namespace defaults to the
  root's. A delegating route whose delegate is missing (or names a VirtualService with hosts, which is no
  delegate) is dropped with a log line; the root's other routes stay. A delegate alone produces nothing: it is
  indexed by no host (hosts.py). One level only: a delegate's route that delegates again is dropped (the model
  already refuses it).
- Each delegate route becomes one merged route, in the delegate's order, in place of the delegating route.
  Matches: when either side has none, the other side's; otherwise every (root block, delegate block) pair that
  does not conflict becomes one merged block, and a delegate block that conflicts with every root block drops
  the whole delegate route (Istio's `mergeHTTPMatchRequests`). A merged block takes the delegate's uri, scheme,
  method, authority, port and sourceNamespace where set, else the root's; headers, withoutHeaders,
  queryParams and sourceLabels are joined (the delegate's value wins for a shared key); names join as
  `root-delegate`.
- Conflicts (`hasConflict`): the delegate's condition must lie within the root's. uri/scheme/method/authority,
  and each header, withoutHeader or queryParam both name: any regex conflicts; root exact needs the same
  exact; root prefix needs a delegate prefix or exact starting with it. ignoreUriCase must agree, ports,
  sourceNamespaces and shared sourceLabels keys must not differ. One deliberate difference: Istio finds a
  conflict whenever the root condition is an empty StringMatch; here a header or query parameter the root
  only asks to be present (`{}`) accepts any delegate condition on it, and two empty conditions agree.
- Route fields: the delegate's own timeout, retries, fault, rewrite, corsPolicy and headers win when set, else
  the root's apply (but no rewrite onto a delegate route that redirects: a route may not combine the two).
  Mirroring is one unit here (the delegate's mirror/mirrorPercentage/mirrors when it sets any, else the
  root's), since `mirror` and `mirrors` exclude each other; Istio inherits each field alone.
- Short destination hosts resolve in the namespace of the resource that wrote them (Istio resolves short names
  before merging): the delegate's destinations in the delegate's namespace, an inherited root mirror in the
  root's. Here they are qualified (`reviews` -> `reviews.<namespace>`) before the merged route is generated.

Not here: `exportTo` visibility of a delegate to the root's namespace (Istio drops a delegating route whose
delegate is not exported to the root's namespace).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence

from services.pilot.generate.hosts import qualify
from shared.model import VirtualService
from shared.model.string_match import StringMatch
from shared.model.virtual_service import (
    Destination,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRoute,
    HTTPRouteDestination,
    PresentOrStringMatch,
)

log = logging.getLogger(__name__)

DelegateKey = tuple[str, str]
"""(namespace, name) of a delegate VirtualService."""


def delegate_key(root: VirtualService, route: HTTPRoute) -> DelegateKey:
    assert route.delegate is not None, "delegate_key of a route that does not delegate"
    return (route.delegate.namespace or root.metadata.namespace, route.delegate.name)


def wanted(applying: Iterable[VirtualService]) -> list[DelegateKey]:
    """Every delegate the VirtualServices' routes name, in order (repeats kept once)."""
    keys = (delegate_key(vs, http) for vs in applying for http in vs.spec.http if http.delegate is not None)
    return list(dict.fromkeys(keys))


def find(keys: Sequence[DelegateKey], virtual_services: Iterable[VirtualService]) -> dict[DelegateKey, VirtualService]:
    """The VirtualServices named by `keys` (with or without hosts; `expand` tells them apart)."""
    if not keys:
        return {}
    looked_for = set(keys)
    return {key: vs for vs in virtual_services if (key := (vs.metadata.namespace, vs.metadata.name)) in looked_for}


def expand(vs: VirtualService, found: Mapping[DelegateKey, VirtualService]) -> Iterator[HTTPRoute]:
    """The VirtualService's http routes with each delegating route replaced by its merged delegate routes."""
    for http in vs.spec.http:
        if http.delegate is None:
            yield http
            continue
        key = delegate_key(vs, http)
        where = f"VirtualService {vs.metadata.namespace}/{vs.metadata.name} route {http.name or '(unnamed)'}"
        delegate = found.get(key)
        if delegate is None:
            log.warning("%s: delegate VirtualService %s/%s does not exist; the route is dropped", where, *key)
            continue
        if not delegate.spec.is_delegate:
            log.warning(
                "%s: VirtualService %s/%s has hosts, so it is not a delegate; the route is dropped", where, *key
            )
            continue
        yield from merge_routes(vs, http, delegate)


def merge_routes(root_vs: VirtualService, root: HTTPRoute, delegate_vs: VirtualService) -> Iterator[HTTPRoute]:
    root = _qualified(root, root_vs.metadata.namespace)
    for sub in delegate_vs.spec.http:
        name = f"VirtualService {delegate_vs.metadata.namespace}/{delegate_vs.metadata.name}"
        if sub.delegate is not None:
            log.warning("%s route %s delegates again (one level only); it is dropped", name, sub.name or "(unnamed)")
            continue
        matches = merge_matches(root.match, sub.match)
        if matches is None:
            log.warning(
                "%s route %s: its matches conflict with the delegating route's (not within them); it is dropped",
                name,
                sub.name or "(unnamed)",
            )
            continue
        yield _merged(root, _qualified(sub, delegate_vs.metadata.namespace), matches)


def _merged(root: HTTPRoute, sub: HTTPRoute, matches: list[HTTPMatchRequest]) -> HTTPRoute:
    mirroring = (
        {}
        if sub.mirror_policies()
        else {"mirror": root.mirror, "mirror_percentage": root.mirror_percentage, "mirrors": root.mirrors}
    )
    return sub.model_copy(
        update={
            "name": _joined(root.name, sub.name),
            "match": matches,
            # a redirect answers itself: a rewrite beside it is refused in a route, so none is inherited
            "rewrite": sub.rewrite if sub.rewrite is not None or sub.redirect is not None else root.rewrite,
            "timeout": sub.timeout if sub.timeout is not None else root.timeout,
            "retries": sub.retries if sub.retries is not None else root.retries,
            "fault": sub.fault if sub.fault is not None else root.fault,
            "cors_policy": sub.cors_policy if sub.cors_policy is not None else root.cors_policy,
            "headers": sub.headers if sub.headers is not None else root.headers,
            **mirroring,
        }
    )


def _joined(root: str | None, sub: str | None) -> str | None:
    if root and sub:
        return f"{root}-{sub}"
    return sub or root


def _qualified(http: HTTPRoute, namespace: str) -> HTTPRoute:
    """The route with every destination host qualified in `namespace`, so it resolves the same from anywhere."""

    def destination(target: Destination) -> Destination:
        return target.model_copy(update={"host": qualify(target.host, namespace)})

    def weighted(item: HTTPRouteDestination) -> HTTPRouteDestination:
        return item.model_copy(update={"destination": destination(item.destination)})

    def mirrored(policy: HTTPMirrorPolicy) -> HTTPMirrorPolicy:
        return policy.model_copy(update={"destination": destination(policy.destination)})

    return http.model_copy(
        update={
            "route": [weighted(item) for item in http.route],
            "mirror": destination(http.mirror) if http.mirror is not None else None,
            "mirrors": [mirrored(policy) for policy in http.mirrors],
        }
    )


def merge_matches(root: list[HTTPMatchRequest], sub: list[HTTPMatchRequest]) -> list[HTTPMatchRequest] | None:
    """The merged match blocks, or None when a delegate block lies within no root block (the route is dropped)."""
    if not root:
        return list(sub)
    if not sub:
        return list(root)
    merged: list[HTTPMatchRequest] = []
    for leaf in sub:
        fitting = [_merge_match(block, leaf) for block in root if not has_conflict(block, leaf)]
        if not fitting:
            return None
        merged.extend(fitting)
    return merged


def _merge_match(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> HTTPMatchRequest:
    return leaf.model_copy(
        update={
            "name": _joined(root.name, leaf.name),
            "uri": leaf.uri or root.uri,
            "scheme": leaf.scheme or root.scheme,
            "method": leaf.method or root.method,
            "authority": leaf.authority or root.authority,
            "port": leaf.port if leaf.port is not None else root.port,
            "headers": {**root.headers, **leaf.headers},
            "without_headers": {**root.without_headers, **leaf.without_headers},
            "query_params": {**root.query_params, **leaf.query_params},
            "source_labels": {**root.source_labels, **leaf.source_labels},
            "source_namespace": leaf.source_namespace or root.source_namespace,
        }
    )


def has_conflict(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> bool:
    """Whether the delegate block `leaf` asks for something outside the root block (Istio's hasConflict)."""
    for root_value, leaf_value in (
        (root.uri, leaf.uri),
        (root.scheme, leaf.scheme),
        (root.method, leaf.method),
        (root.authority, leaf.authority),
    ):
        if _string_conflict(root_value, leaf_value):
            return True
    if any(_string_conflict(root.headers.get(k), v, presence_covers=True) for k, v in leaf.headers.items()):
        return True
    if any(_string_conflict(root.without_headers.get(k), v) for k, v in leaf.without_headers.items()):
        return True
    if any(_string_conflict(root.query_params.get(k), v, presence_covers=True) for k, v in leaf.query_params.items()):
        return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port is not None and leaf.port is not None and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace and root.source_namespace != leaf.source_namespace:
        return True
    return any(key in root.source_labels and root.source_labels[key] != v for key, v in leaf.source_labels.items())


def _presence_only(match: StringMatch) -> bool:
    return isinstance(match, PresentOrStringMatch) and match.presence_only


def _string_conflict(root: StringMatch | None, leaf: StringMatch | None, presence_covers: bool = False) -> bool:
    """Istio's stringMatchConflict: no conflict when either side is unset; a regex on either side conflicts;
    otherwise the leaf must be the root's exact value, or lie within the root's prefix."""
    if root is None or leaf is None:
        return False
    if _presence_only(root):
        return not (presence_covers or _presence_only(leaf))
    if root.regex is not None or leaf.regex is not None:
        return True
    if root.exact is not None:
        return leaf.exact != root.exact
    if root.prefix is not None:
        value = leaf.prefix if leaf.prefix is not None else leaf.exact
        return value is None or not value.startswith(root.prefix)
    return True
