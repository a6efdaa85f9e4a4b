"""A small, honest ONTAP REST emulator for the tests of pve_ontap_snapshot.py.

It is a real HTTPS server on 127.0.0.1 (ephemeral port, certificate from a
`trustme` CA) that speaks the subset of the ONTAP REST API described in
../shared/reference/ontap-rest.md: cluster and SVM lookups, volumes (GET with
fields/filters/pagination, FlexClone POST, PATCH incl. restore, DELETE),
volume snapshots (also a query-based DELETE of them), file clone, the files
API, jobs, and the private-CLI snapshot restore. State lives in memory behind one lock; file data lives in
real directories under `root`, so tests can check bytes on disk:

    root/volumes/<volume uuid>/            active file system of a volume
    root/snapshots/<volume uuid>/<name>/   frozen copy of one snapshot
                                           (the volume's `.snapshot` directory)

Mutating calls are ONTAP jobs: they answer 202 + job and take effect when the
job runs (at once, or after `job_delay`); operation errors surface only in the
job record, validation errors as a 4xx with ONTAP's error envelope. With
`return_timeout`, a job that succeeds in time answers 200/201, one that fails
in time answers with its error.

Python interface:

    emu = OntapEmulator(root, user='admin', password='netapp1!',
                        cluster_name='cluster-a', ca=None, release=NEWEST_RELEASE).start()
    emu.host, emu.port, emu.url, emu.cafile   where to connect, what to trust
    emu.release             the ONTAP release it plays ('9.8' … '9.19.1', settable): what
                            /api/cluster reports, and the fields, filters and parameters it
                            knows (_RELEASE_OF_FIELD, with NetApp's sources)
    emu.add_svm(name) -> {'name', 'uuid'}
    emu.add_volume(name, svm='svm1', junction='/<name>' | None, size=...) -> Volume
    emu.add_snapshot(volume_name, snap_name, comment='', create_time=None, svm=None)
    emu.volume(name, svm=None) -> Volume | None;  emu.volumes -> [Volume]
    emu.users[name] = password;  emu.cert_user(name) -> (certfile, keyfile)
    emu.requests            one record per request: method, path, query, body,
                            status (None while in flight or dropped), seq, time
    emu.on_request          callable(record), called as each request arrives
    emu.utc_offset          the cluster's time zone for create_time: a timedelta
                            (changed between snapshots: a DST change), None = this machine's
    emu.latency, emu.job_delay, emu.page_size     knobs (seconds, seconds, records)
    emu.fail(...), emu.fail_job(...), emu.slow_job(...), emu.drop(...),
    emu.lose_answer(...)    faults (drop: never carried out; lose_answer: carried out, unanswered)
    (files API)             GET …/files/{path}?byte_offset=&length= with Accept multipart/form-data
                            reads a file's data (up to 1 MB), as one form-data part
    emu.file_delete_jobs    answer a files-API DELETE with a job (the reference lists 200 and 202)
    emu.busy_after_clone    seconds a snapshot stays busy (its DELETE fails with 1638555) after a
                            file clone from `.snapshot/<name>/…`: 0 (default) none
    emu.on_clone            callable(volume, source, destination), called under the lock right
                            after each file clone is made: a test changes disks between two clones
    emu.licenses            {package: state} of the installed licences (flexclone, snaprestore, ...)
    emu.add_snapmirror_policy(name, retention=(('daily', 7), ...), type='async',
                            copy_all_source_snapshots=False) -> the policy record: one this cluster
                            holds (a relationship's policy lives on its destination cluster)
    emu.add_snapmirror(volume_name, destination='svm:vol', policy=record, svm=None): a relationship
                            whose source is the volume here; `policy` may be another emulator's
    emu.destinations_name_policy   whether the source's list of destinations fills `policy` (True;
                            unconfirmed, see _get_snapmirror_relationships)
    emu.collection_delete_answer   'jobs' (default), 'job' or 'bare': the shape of a
                            query-based DELETE's answer, none of them confirmed (ref §13)
    emu.stop()              also usable as a context manager

Where the reference marks a behaviour **unconfirmed**, the choice made here is
commented with the section it comes from ("ref §N").
"""

import base64
import datetime
import email.utils
import functools
import json
import logging
import os
import re
import shutil
import socket
import ssl
import stat
import struct
import threading
import time
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

MAX_RETURN_TIMEOUT = 120
FILE_READ_MAX = 2**20   # the files API reads and writes at most 1 MB per call (netapp_ontap file_info.py)
# ONTAP lists this owner for a snapshot that backs a FlexClone; the exact
# string is unconfirmed (ref §6 only says `owners` is an array).
CLONE_OWNER = 'volume clone'
_AUTO = object()   # add_volume's default junction: '/<name>'
log = logging.getLogger(__name__)


def _now(offset=None):
    """The current time as ONTAP prints it: ISO 8601 with an offset."""
    return _time_text(datetime.datetime.now(datetime.UTC), offset)


def _time_text(moment, offset=None):
    """An aware datetime as ONTAP prints it, in the cluster's time zone: `offset` (a timedelta),
    or this machine's local zone for None. ONTAP uses the cluster's own zone, so the offset
    changes with DST between two snapshots (ref §13)."""
    zone = None if offset is None else datetime.timezone(offset)
    return moment.astimezone(zone).isoformat(timespec='seconds')


def _parse_time(name, text):
    """An ISO 8601 time as an aware datetime (local time when it has no offset)."""
    try:
        return datetime.datetime.fromisoformat(text).astimezone()
    except (TypeError, ValueError):
        raise ApiError(400, '262197', f'Invalid value "{text}" for field "{name}".', name) from None


def _encode_path(path):
    """A volume path as one URL segment: `/` as %2F and `.` as %2E (ref §10)."""
    return urllib.parse.quote(path, safe='').replace('.', '%2E')


def _iso_from_timestamp(ts):
    return _iso_from_second(int(ts // 1))    # isoformat(timespec="seconds") drops the fraction


def _links_below(base, parts):
    """Whether a path of `parts` (no `..` among them) below `base` goes through a symbolic link:
    only then may it lead out of `base` (one lstat a part, not realpath's of the whole path)."""
    path = base
    for part in parts:
        path = os.path.join(path, part)
        if os.path.islink(path):
            return True
    return False


@functools.lru_cache(maxsize=4096)   # four times of every file of every listing: few seconds
def _iso_from_second(second):
    return datetime.datetime.fromtimestamp(second).astimezone().isoformat(timespec='seconds')


def _tree_size(path):
    """Bytes of all regular files below `path` (0 when it does not exist)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        total += sum(os.lstat(os.path.join(folder, name)).st_size for name in files)
    return total


# ---------------------------------------------------------------- state model

@dataclass(eq=False)
class Snapshot:
    """One volume snapshot; `path` is its frozen copy, `owners` non-empty = busy."""
    uuid: str
    name: str
    comment: str
    create_time: str
    path: Path
    owners: list = field(default_factory=list)
    expiry_time: str = None
    snapmirror_label: str = None
    seq: int = 0   # creation order, breaks create_time ties
    busy_until: float = 0.0   # time.monotonic() until which a file clone from it keeps it busy

    @property
    def busy(self):
        return bool(self.owners) or time.monotonic() < self.busy_until

    def sort_key(self):
        return _parse_time('create_time', self.create_time), self.seq


@dataclass(eq=False)
class Volume:
    """One FlexVol; `path` is the real directory of its active file system."""
    uuid: str
    name: str
    svm: str
    junction: str
    path: Path
    size: int
    create_time: str
    comment: str = ''
    type: str = 'rw'
    export_policy: str = 'default'
    state: str = 'online'
    style: str = 'flexvol'              # or 'flexgroup': only the record says so here
    snapshot_reserve_percent: int = 5   # ONTAP's default for a NAS volume (unconfirmed)
    snapshot_autodelete: bool = False
    snapshot_policy: str = 'default'    # the policy a new volume gets: ontap-restapi post-storage-volumes
    snapshots: dict = field(default_factory=dict)   # name -> Snapshot
    is_flexclone: bool = False
    parent_volume: 'Volume' = None
    parent_snapshot: str = None

    def snapshot_path(self, name):
        return self.snapshots[name].path

    @property
    def snapdir(self):
        """Where the snapshots' copies live: the volume's `.snapshot` directory."""
        return self.path.parent.parent / 'snapshots' / self.uuid


@dataclass(eq=False)
class Job:
    """An ONTAP job: `operation` runs under the emulator lock when the job does."""
    uuid: str
    description: str
    operation: object
    delay: float
    failure: tuple = None   # (code, message) forced by fail_job()
    state: str = 'queued'
    code: int = 0
    message: str = None
    start_time: str = field(default_factory=_now)
    end_time: str = None
    done: threading.Event = field(default_factory=threading.Event)

    def link(self):
        return {'uuid': self.uuid, '_links': {'self': {'href': f'/api/cluster/jobs/{self.uuid}'}}}

    def record(self):
        record = {'uuid': self.uuid, 'description': self.description, 'state': self.state,
                  'message': self.message, 'code': self.code, 'start_time': self.start_time,
                  'end_time': self.end_time}
        if self.state == 'failure':
            record['error'] = {'message': self.message, 'code': str(self.code)}
        record = {key: value for key, value in record.items() if value is not None}
        return {**record, '_links': self.link()['_links']}


@dataclass
class _Fault:
    """One armed fault; see OntapEmulator.fail/fail_job/slow_job/drop."""
    kind: str
    method: str
    pattern: re.Pattern
    match: object
    remaining: int
    status: int = 500
    code: object = None
    message: str = ''
    seconds: float = 0.0

    def applies(self, request):
        if self.remaining == 0 or self.method != request.method:
            return False
        if not self.pattern.search(request.path):
            return False
        if self.match is None:
            return True
        if callable(self.match):
            return bool(self.match(request.body))
        return _is_subset(self.match, request.body)


def _is_subset(want, have):
    """True if dict `want` is contained in `have`, nested dicts compared recursively."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            key in have and _is_subset(value, have[key]) for key, value in want.items())
    return want == have


# ---------------------------------------------------------------- errors

class ApiError(Exception):
    """Answered at once with ONTAP's envelope: {"error": {"message", "code", "target"}}."""

    def __init__(self, status, code, message, target=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.target = status, str(code), message, target
        self.headers = headers or {}

    def body(self):
        error = {'message': self.message, 'code': self.code}
        if self.target:
            error['target'] = self.target
        return {'error': error}


class JobError(Exception):
    """An operation error found while a job runs: the job ends in failure."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def _not_found(target='uuid'):
    return ApiError(404, '4', "entry doesn't exist", target)


def _unexpected(name):
    return ApiError(400, '262179', f'Unexpected argument "{name}".', name)


def _invalid(name, value):
    return ApiError(400, '262197', f'Invalid value "{value}" for field "{name}".', name)


# ---------------------------------------------------------------- request bodies and queries

def _expand_dotted(body):
    """{"a.b": 1} -> {"a": {"b": 1}}: ONTAP accepts dotted keys in bodies (ref §0)."""
    expanded = {}
    for key, value in body.items():
        if isinstance(value, dict):
            value = _expand_dotted(value)
        *parents, last = key.split('.')
        node = expanded
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last].update(value)
        else:
            node[last] = value
    return expanded


def _leaf_names(body, prefix=''):
    for key, value in body.items():
        if isinstance(value, dict) and value:
            yield from _leaf_names(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}'


def _check_body(body, allowed):
    """Reject body fields this endpoint does not take (ONTAP: 262179)."""
    for name in _leaf_names(body):
        if name not in allowed:
            raise _unexpected(name)


def _get(body, dotted, default=None):
    node = body
    for part in dotted.split('.'):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _body_str(body, name, required=False):
    value = _get(body, name)
    if value is None and required:
        raise ApiError(400, '2', f'Missing value for field "{name}".', name)
    if value is not None and not isinstance(value, str):
        raise _invalid(name, value)
    return value


def _body_bool(body, name):
    value = _get(body, name, False)
    if not isinstance(value, bool):
        raise _invalid(name, value)
    return value


def _bool_value(name, value):
    # The official client sends Python's `True`; ONTAP's acceptance of that is
    # unconfirmed (ref §0) — accepted here so the original script's traffic works.
    if value.lower() not in ('true', 'false'):
        raise _invalid(name, value)
    return value.lower() == 'true'


def _int_value(name, value, low, high=None):
    try:
        number = int(value)
    except ValueError:
        raise _invalid(name, value) from None
    if number < low or (high is not None and number > high):
        raise _invalid(name, value)
    return number


def _relative_path(name, value):
    """File clone paths are volume-relative; a leading '/' is error 917812 (ref §5)."""
    if value.startswith('/'):
        raise ApiError(400, '917812', f'Invalid path "{value}": use a path relative to '
                       'the volume root.', name)
    return value


# ---------------------------------------------------------------- query language (fields, filters, pages)

@dataclass(frozen=True)
class _Kind:
    """What the query engine knows about one record type."""
    fields: frozenset      # every dotted field name a client may ask for or filter on
    keys: tuple            # always returned
    expensive: tuple = ()  # only returned when named (ref §1, pitfall 5)

    def knows(self, name, version=None):
        """Whether `name` is a field of this record (in the release `version`, if given)."""
        known = name in self.fields or any(f.startswith(name + '.') for f in self.fields)
        return known and (version is None or _introduced(self, name) <= version)


_VOLUME = _Kind(frozenset({
    'uuid', 'name', 'comment', 'create_time', 'state', 'type', 'style', 'size',
    'snapshot_count', 'space.size', 'space.used', 'space.available', 'space.percent_used',
    'space.snapshot.used',
    'svm.name', 'svm.uuid', 'aggregates.name', 'aggregates.uuid', 'nas.path',
    'nas.export_policy.name', 'clone.is_flexclone', 'clone.has_flexclone',
    'clone.split_initiated', 'clone.parent_volume.name', 'clone.parent_volume.uuid',
    'clone.parent_snapshot.name', 'clone.parent_snapshot.uuid', 'clone.parent_svm.name',
    'clone.parent_svm.uuid',
    # What `doctor` reads. snapshot_policy and space.snapshot.* are in the 9.6 reference
    # (ontap-restapi-96 get-storage-volumes lists them); space.snapshot.autodelete_enabled is
    # named by NetApp's 9.8 ONTAPI-to-REST map (ontap-restmap-98 snapshot-autodelete-list-info),
    # earlier releases unconfirmed; newer clients call it deprecated for autodelete.enabled.
    'space.snapshot.reserve_percent', 'space.snapshot.autodelete_enabled', 'snapshot_policy.name'}),
    keys=('uuid', 'name'),
    expensive=('nas.path', 'clone.parent_volume', 'clone.parent_snapshot', 'clone.parent_svm'))
_SNAPSHOT = _Kind(frozenset({
    'uuid', 'name', 'comment', 'create_time', 'size', 'owners', 'state', 'expiry_time',
    'snapmirror_label', 'volume.name', 'volume.uuid', 'svm.name', 'svm.uuid'}), keys=('uuid', 'name'))
_SVM = _Kind(frozenset({'uuid', 'name', 'state', 'subtype'}), keys=('uuid', 'name'))
_CLUSTER = _Kind(frozenset({
    'name', 'uuid', 'version.full', 'version.generation', 'version.major', 'version.minor'}),
    keys=('name', 'uuid'))
_JOB = _Kind(frozenset({
    'uuid', 'description', 'state', 'message', 'code', 'start_time', 'end_time',
    'error.message', 'error.code'}), keys=('uuid',))
_FILE = _Kind(frozenset({
    'path', 'name', 'type', 'size', 'bytes_used', 'creation_time', 'modified_time',
    'changed_time', 'accessed_time', 'unix_permissions', 'owner_id', 'group_id',
    'hard_links_count', 'inode_number', 'is_empty', 'is_junction', 'is_snapshot', 'volume.uuid',
    'volume.name'}), keys=('path', 'name', 'type'))

# Licence packages, GET /api/cluster/licensing/licenses (9.6+; netapp_ontap resources/license_package.py):
# by default only installed packages are listed.
_LICENSE = _Kind(frozenset({'name', 'scope', 'state', 'description'}), keys=('name',))

# SnapMirror (doctor): GET /api/snapmirror/relationships and /api/snapmirror/policies[/{uuid}],
# both "Introduced In: 9.6" (ontap-restapi-9121 get-snapmirror-relationships, ontap-restapi-9131
# get-snapmirror-policies-). The relationship fields: source.path, source.svm.*, destination.path,
# policy.name, policy.uuid, policy.type, state, healthy (the 9.6 reference's filters, netapp_ontap's
# SnapmirrorRelationshipSchema and SnapmirrorRelationshipPolicySchema). The policy fields: name, type,
# retention (label, count, ...; ontap-restapi-96 post-snapmirror-policies), the copy_* flags (see
# _RELEASE_OF_FIELD), scope, svm.*, comment (netapp_ontap SnapmirrorPolicySchema).
_SNAPMIRROR_RELATIONSHIP = _Kind(frozenset({
    'uuid', 'source.path', 'source.svm.name', 'source.svm.uuid', 'destination.path', 'destination.svm.name',
    'policy.name', 'policy.uuid', 'policy.type', 'state', 'healthy'}), keys=('uuid',))
_SNAPMIRROR_POLICY = _Kind(frozenset({
    'uuid', 'name', 'type', 'comment', 'scope', 'svm.name', 'svm.uuid', 'retention', 'retention.label',
    'retention.count', 'copy_all_source_snapshots', 'copy_latest_source_snapshot', 'create_snapshot_on_source'}),
    keys=('uuid', 'name'))

_PAGE_PARAMS = ('max_records', 'return_records', 'order_by', 'offset')


# ---------------------------------------------------------------- releases

# The releases the suite plays: the oldest the tool supports and the newest NetApp publishes
# (9.19.1: NetApp's client netapp_ontap 9.19.1.0, generated from that release's REST API, has
# every field the tool uses; docs.netapp.com/us-en/ontap-restapi was the 9.18.1 reference when
# last read), and some between. Any "9.x[.y]" works; the emulator plays NEWEST_RELEASE unless
# told otherwise.
OLDEST_RELEASE, NEWEST_RELEASE = '9.8', '9.19.1'
RELEASES = ('9.8', '9.9.1', '9.10.1', '9.14.1', '9.18.1', '9.19.1')


def release_version(release):
    """'9.10.1' -> (9, 10, 1), '9.8' -> (9, 8, 0): comparable with the (9, 9) entries below."""
    parts = [int(part) for part in release.split('.')]
    if len(parts) not in (2, 3) or parts[:2] < [9, 6]:
        raise ValueError(f'not an ONTAP release with a REST API: {release!r}')
    return tuple(parts + [0] * (3 - len(parts)))


# When each field and filter the tool uses came to ONTAP's REST API, per record kind: a release
# that lacks one answers it as unknown (in `fields`: 262197; as a filter: 262179, see
# _invalid_field and _unexpected). A name covers its sub-fields ('error' covers 'error.code').
# A field not listed (none the tool sends) is taken to be in every release played here.
# Sources, and what each says:
#  [snap98]   https://docs.netapp.com/us-en/ontap-restapi-98/get-storage-volumes-snapshots.html
#             the 9.8 GET takes uuid, name, comment, create_time, state, owners (9.7), svm.*,
#             volume.*, expiry_time, snaplock_expiry_time as filters, and fields, max_records,
#             return_records, return_timeout; no size
#  [snap9101] https://docs.netapp.com/us-en/ontap-restapi-9101/get-storage-volumes-snapshots.html
#             "size ... Introduced in: 9.9", "reclaimable_space ... Introduced in: 9.10"
#  [jobs98]   https://docs.netapp.com/us-en/ontap-restapi-98/get-cluster-jobs.html  GET
#             /cluster/jobs "Introduced In: 9.6" with uuid, description, state, message, code,
#             start_time, end_time (svm.* "Introduced in: 9.8"); no error
#  [jobs9161] https://docs.netapp.com/us-en/ontap-restapi-9161/get-cluster-jobs.html
#             "error.code / error.message / error.arguments.* ... Introduced in: 9.9",
#             "node.name ... Introduced in: 9.11"
#  [vol96]    https://docs.netapp.com/us-en/ontap-restapi-96/get-storage-volumes.html  nas.path,
#             clone.parent_volume.*, clone.parent_snapshot.*, space.snapshot.* (expensive) in 9.6
#  [client]   NetApp's python client netapp_ontap, "generated based on the ONTAP REST API
#             documentation" of its release (PyPI 9.8.0, 9.9.1.0, 9.10.1.0, 9.15.1.0, 9.16.1.0):
#             the 9.8.0 VolumeSchema has every volume field the tool uses but space.percent_used
#             (first in 9.9.1.0) and snapshot_count (first in 9.10.1.0); clone.has_flexclone is
#             first in 9.16.1.0; the 9.8.0 SnapshotSchema lacks size, its JobSchema error, its
#             FileInfoSchema has name, type, size, path. No reference page giving "Introduced in"
#             for these volume fields was found (unconfirmed beyond the client).
_RELEASE_OF_FIELD = {
    _SNAPSHOT: {
        'uuid': (9, 6), 'name': (9, 6), 'comment': (9, 6), 'create_time': (9, 6),   # [snap98]
        'owners': (9, 7),                                                          # [snap98]
        # POST/PATCH 9.7+ (ref §13; netapp.ontap 21.13.0's changelog: "snapmirror_label is
        # supported with REST on ONTAP 9.7 or higher"); as a GET filter "Introduced in: 9.8" [snap9101]
        'snapmirror_label': (9, 7),
        'size': (9, 9),                                                            # [snap9101]
    },
    _JOB: {
        'uuid': (9, 6), 'description': (9, 6), 'state': (9, 6), 'message': (9, 6),  # [jobs98]
        'code': (9, 6), 'start_time': (9, 6), 'end_time': (9, 6),                   # [jobs98]
        'error': (9, 9),                                                            # [jobs9161]
    },
    _VOLUME: {
        'nas.path': (9, 6), 'clone.parent_volume': (9, 6), 'clone.parent_snapshot': (9, 6),  # [vol96]
        'space.snapshot.used': (9, 6),                                                       # [vol96]
        # in the 9.8 client ([client]); 9.6 by the reference (ref §4), not re-checked
        'uuid': (9, 6), 'name': (9, 6), 'svm.name': (9, 6), 'state': (9, 6), 'type': (9, 6),
        'style': (9, 6), 'size': (9, 6), 'space.size': (9, 6), 'space.used': (9, 6),
        'space.available': (9, 6), 'nas.export_policy.name': (9, 6), 'clone.is_flexclone': (9, 6),
        'create_time': (9, 6), 'comment': (9, 6),
        'space.percent_used': (9, 9),       # [client] 9.9.1.0; unconfirmed by a reference page
        'snapshot_count': (9, 10),          # [client] 9.10.1.0; unconfirmed by a reference page
        'clone.has_flexclone': (9, 16),     # [client] 9.16.1.0; not used by the tool
    },
    _FILE: {
        # GET …/files/{path} (list, 9.7) and ?return_metadata=true (9.8): ref §10 and §13
        # ("ontap-restapi-98, files endpoint"); the fields are in the 9.8.0 FileInfoSchema
        'name': (9, 7), 'type': (9, 7), 'size': (9, 7), 'path': (9, 7),
    },
    _CLUSTER: {
        'version': (9, 6),                  # ref §0 ("GET /api/cluster?fields=version"), 9.8.0 client
    },
    _SNAPMIRROR_POLICY: {
        # absent from ontap-restapi-98 post-snapmirror-policies, first named in ontap-restapi-9101's
        # ("The property "copy_all_source_snapshots" is not applicable for "sync" type policies")
        'copy_all_source_snapshots': (9, 10),
        # first named, with create_snapshot_on_source, in ontap-restapi-9111 post-snapmirror-policies
        'copy_latest_source_snapshot': (9, 11), 'create_snapshot_on_source': (9, 11),
    },
}

# When each query parameter (not a filter) came, by name; a release that lacks it answers
# 262179 "Unexpected argument" (as for any unknown query parameter: NetApp/harvest#2534).
#  return_timeout, return_records: POST /storage/file/clone in ontap-restapi-97 and -98
#    (https://docs.netapp.com/us-en/ontap-restapi-98/post-storage-file-clone.html, the call itself
#    "Introduced In: 9.6"); fields, max_records, return_records, return_timeout on GET: [snap98]
#  return_metadata: GET …/files/{path}?return_metadata=true, 9.8 (ref §13; netapp_ontap 9.8.0's
#    FileInfo docs list it)
#  restore_to.snapshot.name on PATCH /storage/volumes/{uuid}: "the query parameters are
#    documented from 9.8" (ref §7; not re-checked here)
#  force on DELETE /storage/volumes/{uuid}: 9.12+ (ref §9); what an older release answers to it
#    is unconfirmed (262179 here, as for any unknown parameter); the tool never sends it
_RELEASE_OF_PARAMETER = {
    'fields': (9, 6), 'max_records': (9, 6), 'return_records': (9, 6), 'return_timeout': (9, 6),
    'return_metadata': (9, 8), 'restore_to.snapshot.name': (9, 8), 'force': (9, 12),
    # GET /snapmirror/relationships?list_destinations_only=true: in the 9.6 reference
    # (ontap-restapi-96 get-snapmirror-relationships, "Set to true to show relationships from the source only")
    'list_destinations_only': (9, 6),
    # reading a file's data: 9.8 taken with the POST that writes one ("Introduced In: 9.8"); unconfirmed
    'byte_offset': (9, 8), 'length': (9, 8),
    # writing over a file: the POST that writes one lists it ("Introduced In: 9.8")
    'overwrite': (9, 8),
}
# Not tied to a field: the query-based DELETE of …/snapshots the tool uses: "ONTAP supports
# query-based DELETE or PATCH for all collection endpoints" from 9.7 on
# (https://docs.netapp.com/us-en/ontap-restapi-97/ontap/getting_started_with_the_ontap_rest_api.html;
# netapp_ontap 9.8.0 has Snapshot.delete_collection). Request bodies the tool sends hold only
# fields of 9.8 or older: POST /storage/file/clone volume.uuid, volume.name, source_path,
# destination_path, overwrite_destination (post-storage-file-clone above); POST …/snapshots
# name, comment ([snap98]'s fields, 9.8.0 client postable); POST /storage/volumes (FlexClone)
# name, svm.name, type, nas.path, clone.is_flexclone, clone.parent_volume.name,
# clone.parent_snapshot.name and PATCH {"nas": {"path": ""}} (9.8.0 client: postable and
# patchable). So bodies are not checked per release.


@functools.cache     # a volume's directories stay where they are for the emulator's life
def _resolved(path):
    return path.resolve()


@functools.cache     # asked for every field of every record answered: the tables never change
def _introduced(kind, name):
    """The release (generation, major) that brought field `name` of `kind`; (0,) if not listed."""
    table = _RELEASE_OF_FIELD.get(kind, {})
    return max((since for entry, since in table.items() if _covers(entry, name)), default=(0,))


def _invalid_field(name):
    """ONTAP's refusal of an unknown entry of `fields` (NetApp/harvest#3639 on 9.9.1 and
    netapp.ontap#189: HTTP 400, code 262197, target "fields", this exact text)."""
    return ApiError(400, '262197', f'The value "{name}" is invalid for field "fields" (<field,...>)', 'fields')


def _split_fields(spec):
    """'a,b.{c,d},!e' -> ['a', 'b.c', 'b.d', '!e']."""
    names, depth, current = [], 0, ''
    for char in spec + ',':
        if char == ',' and depth == 0:
            names.append(current.strip())
            current = ''
            continue
        depth += {'{': 1, '}': -1}.get(char, 0)
        current += char
    expanded = []
    for name in filter(None, names):
        head, brace, rest = name.partition('{')
        if brace:
            expanded.extend(head + inner.strip() for inner in rest.rstrip('}').split(','))
        else:
            expanded.append(name)
    return expanded


def _parse_fields(spec, kind, ignore_unknown, version=None):
    """Return (include, exclude) sets of field names for `fields=`."""
    include, exclude = set(), set()
    for name in _split_fields(spec or ''):
        target, bare = (exclude, name[1:]) if name.startswith('!') else (include, name)
        if bare in ('*', '**') or kind.knows(bare, version):
            target.add(bare)
        elif not ignore_unknown:
            raise _invalid_field(bare)
    return include, exclude


def _asks_for(request, top, fields=''):
    """Whether a GET may answer, match or order by field `top` (or a field below it): `top` named in
    `fields` (or `*`, `**`; an instance GET without them is `*`), in a filter or in order_by."""
    names = [name.lstrip('!') for name in _split_fields(request.query.get('fields', fields))]
    names += [name for name in request.query if name != 'fields']
    names += [entry.split()[0] for entry in request.query.get('order_by', '').split(',') if entry.strip()]
    return any(name in ('*', '**') or _covers(top, name) or _covers(name, top) for name in names)


def _covers(prefix, name):
    return name == prefix or name.startswith(prefix + '.')


@functools.cache     # one per kind of request: every record of an answer, and of the next, asks the same
def _selector(include, exclude, kind, version):
    """Whether a leaf `name` is answered, for `fields=` (include, exclude) of `kind` in `version`."""
    @functools.cache
    def wanted(name):
        if any(_covers(gone, name) for gone in exclude):
            return False
        if version is not None and _introduced(kind, name) > version:
            return False
        if name in kind.keys or '**' in include:
            return True
        if '*' in include and not any(_covers(e, name) for e in kind.expensive):
            return True
        return any(_covers(f, name) or _covers(name, f) for f in include)
    return wanted


def _select(record, include, exclude, kind, version=None):
    """Keep the keys, `_links` and the leaves `fields=` asks for (that the release `version` has)."""
    wanted = _selector(frozenset(include), frozenset(exclude), kind, version)

    def prune(node, prefix):
        kept = {}
        for key, value in node.items():
            name = prefix + key
            if key == '_links' and not prefix:
                kept[key] = value
            elif isinstance(value, dict):
                sub = prune(value, name + '.')
                if sub:
                    kept[key] = sub
            elif wanted(name):
                kept[key] = value
        return kept
    return prune(record, '')


def _lookup(record, dotted):
    """All values at a dotted path; lists (e.g. aggregates) contribute each element."""
    found = [record]
    for part in dotted.split('.'):
        found = [item[part] for value in found
                 for item in (value if isinstance(value, list) else [value])
                 if isinstance(item, dict) and part in item]
    return [v for value in found for v in (value if isinstance(value, list) else [value])]


def _text(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_quoted(term):
    return len(term) >= 2 and (term[0], term[-1]) in (('"', '"'), ('{', '}'))


def _compare(value, operand, op):
    try:
        left, right = float(value), float(operand)
    except (TypeError, ValueError):
        left, right = _text(value), operand
    return {'<': left < right, '>': left > right, '<=': left <= right, '>=': left >= right}[op]


def _match_value(value, term):
    if _is_quoted(term):
        return _text(value) == term[1:-1]
    for op in ('<=', '>=', '<', '>'):
        if term.startswith(op):
            return _compare(value, term[len(op):], op)
    if '..' in term:
        low, high = term.split('..', 1)
        return _compare(value, low, '>=') and _compare(value, high, '<=')
    if '*' in term:
        pattern = '.*'.join(re.escape(part) for part in term.split('*'))
        return re.fullmatch(pattern, _text(value), re.DOTALL) is not None
    # Matching is case-sensitive except for booleans (unconfirmed, ref §1).
    return _text(value) == term or (isinstance(value, bool) and _text(value) == term.lower())


def _matches(values, expression):
    """ONTAP query syntax: `a|b` or, `!x` not, `*` wildcard, `null`, `<`, `a..b`, quotes."""
    terms = [expression] if _is_quoted(expression) else expression.split('|')
    for term in terms:
        negate = term.startswith('!')
        term = term[1:] if negate else term
        hit = not values if term == 'null' else any(_match_value(v, term) for v in values)
        if hit != negate:
            return True
    return False


def _sort_key(values):
    if not values or values[0] is None:
        return (2, '')
    value = values[0]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, _text(value))


def _ordered(records, spec, kind, version=None):
    """`order_by=name desc,create_time`; without it records keep creation order."""
    for clause in reversed(spec.split(',')):
        name, _, direction = clause.strip().partition(' ')
        if not kind.knows(name, version):
            raise _unexpected(name)
        if direction.strip() not in ('', 'asc', 'desc'):
            raise _invalid('order_by', spec)
        records = sorted(records, key=lambda r, n=name: _sort_key(_lookup(r, n)),
                         reverse=direction.strip() == 'desc')
    return records


# ---------------------------------------------------------------- requests and replies

@dataclass
class _Request:
    """One parsed HTTP request as the handlers see it."""
    method: str
    raw_path: str        # still percent-encoded, as sent
    path: str            # decoded
    query_items: list    # [(name, value)] in order, decoded
    body: object         # parsed JSON object with dotted keys expanded, None, or _BAD_JSON
    raw_body: object     # parsed JSON as sent (None if absent or invalid)
    form: dict = None    # a multipart/form-data body: {field: bytes}
    accept: str = ''     # the Accept header

    @property
    def query(self):
        return dict(self.query_items)


@dataclass
class _Reply:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)


@dataclass
class _Accepted:
    """A handler's answer for a job-backed call; the dispatcher runs and waits."""
    job: Job
    location: str = None
    created: dict = None


_ROUTES = []
FILTERS = None   # a route's `query`: a query-based call, its filters checked by the query engine


def _route(method, pattern, query=()):
    """Register a handler for `method` on raw paths matching `pattern`.

    `query` names the query parameters a non-GET call takes besides
    `return_timeout` (or is FILTERS); GET parameters are checked by the query engine.
    """
    def register(handler):
        _ROUTES.append((method, re.compile(pattern), FILTERS if query is FILTERS else frozenset(query), handler))
        return handler
    return register


_VOL = r'/api/storage/volumes/(?P<vol_uuid>[^/]+)'


# ---------------------------------------------------------------- the emulator

class OntapEmulator:
    """An ONTAP cluster on 127.0.0.1 backed by directories under `root`."""

    def __init__(self, root, user='admin', password='netapp1!', cluster_name='cluster-a',
                 ca=None, release=NEWEST_RELEASE):
        self.root = Path(root)
        self.release = release
        self.users = {user: password}
        self.cert_users = set()
        self.cluster_name = cluster_name
        self.cluster_uuid = str(uuidlib.uuid4())
        self.aggregate = {'name': 'aggr1', 'uuid': str(uuidlib.uuid4())}
        self.ca = ca or trustme.CA()
        self.requests = []
        self.on_request = None
        self.utc_offset = None
        self.latency = 0.0
        self.in_flight = 0              # requests being answered now
        self.most_in_flight = 0         # the most answered at once (tests bound a command's parallel requests)
        self.job_delay = 0.0
        self.page_size = None
        self.file_delete_jobs = False
        self.busy_after_clone = 0.0
        self.split_load_refusals = 0    # the next file clones refused as at the split-load limit
        self.on_clone = None
        self.collection_delete_answer = 'jobs'
        self.licenses = {'nfs': 'compliant', 'flexclone': 'compliant', 'snaprestore': 'compliant'}
        self.destinations_name_policy = True
        self._snapmirror_policies = {}   # uuid -> policy (add_snapmirror_policy)
        self._snapmirrors = []           # relationships whose source is here (add_snapmirror)
        self._lock = threading.Lock()
        self._svms = {}     # name -> {'name', 'uuid'}
        self._volumes = {}  # uuid -> Volume, in creation order
        self._jobs = {}
        self._faults = []
        self._seq = 0
        self._snap_seq = 0
        self._server = None
        self._stopped = threading.Event()
        self.root.mkdir(parents=True, exist_ok=True)
        self.cafile = str(self.root / 'ca.pem')
        self.ca.cert_pem.write_to_path(self.cafile)

    # ---- lifecycle

    def start(self):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert('127.0.0.1', 'localhost').configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL   # client certificates are optional
        self._server = _TLSServer(self, context)
        self._stopped.clear()
        threading.Thread(target=self._server.serve_forever, kwargs={'poll_interval': 0.02},
                         name=f'ontap-emulator-{self.port}', daemon=True).start()
        return self

    def stop(self):
        """Stop serving, cut open connections and abandon jobs still waiting."""
        if self._server is None:
            return
        self._stopped.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def release(self):
        """The ONTAP release this cluster plays, as NetApp writes it ('9.8', '9.14.1'): what
        /api/cluster reports and which fields, filters and parameters it knows."""
        return self._release

    @release.setter
    def release(self, release):
        self.version = release_version(release)
        self._release = release

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def host(self):
        return f'127.0.0.1:{self.port}'

    @property
    def url(self):
        return f'https://{self.host}'

    # ---- test setup

    def add_svm(self, name):
        with self._lock:
            return dict(self._ensure_svm(name))

    def add_volume(self, name, svm='svm1', junction=_AUTO, size=100 * 2**30):
        junction = f'/{name}' if junction is _AUTO else junction
        with self._lock:
            self._ensure_svm(svm)
            if self._find_volume(name, svm):
                raise ValueError(f'volume {svm}:{name} exists')
            return self._new_volume(name, svm, junction, size)

    def add_snapshot(self, volume_name, snap_name, comment='', create_time=None, svm=None):
        """Take a snapshot now (copies the files); create_time: ISO string or datetime."""
        if isinstance(create_time, str):
            create_time = _parse_time('create_time', create_time)
        if create_time:
            create_time = _time_text(create_time, self.utc_offset)
        with self._lock:
            vol = self._only_volume(volume_name, svm)
            if snap_name in vol.snapshots:
                raise ValueError(f'snapshot {snap_name} exists on {volume_name}')
            return self._take_snapshot(vol, snap_name, comment, create_time)

    def add_snapmirror_policy(self, name, retention=(), type='async', copy_all_source_snapshots=False):
        """A SnapMirror policy of this cluster: `retention` [(label, count)], the rules that keep
        labelled snapshots on the destination. Returns its record for add_snapmirror."""
        policy = {'uuid': str(uuidlib.uuid4()), 'name': name, 'type': type, 'scope': 'cluster',
                  'retention': [{'label': label, 'count': count} for label, count in retention],
                  'copy_all_source_snapshots': copy_all_source_snapshots}
        with self._lock:
            self._snapmirror_policies[policy['uuid']] = policy
        return dict(policy)

    def add_snapmirror(self, volume_name, destination, policy, svm=None):
        """A SnapMirror relationship from the volume here to `destination` ('svm:volume') under
        `policy` (a record of add_snapmirror_policy, of this emulator or another one)."""
        with self._lock:
            vol = self._only_volume(volume_name, svm)
            self._snapmirrors.append({'uuid': str(uuidlib.uuid4()), 'source': vol, 'destination': destination,
                                      'policy': {key: policy[key] for key in ('uuid', 'name', 'type')}})

    def volume(self, name, svm=None):
        """The volume called `name` (in `svm`, or the only one of that name), or None."""
        with self._lock:
            return self._only_volume(name, svm, missing_ok=True)

    @property
    def volumes(self):
        with self._lock:
            return list(self._volumes.values())

    def wait_for_jobs(self, timeout=30):
        """Until every job has ended, so that a test checks the state it leaves for good."""
        deadline = time.monotonic() + timeout
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f'job {job.description} still {job.state} after {timeout} s')

    def cert_user(self, name):
        """Issue a client certificate with CN=name and accept it as user `name`."""
        leaf = self.ca.issue_cert(f'{name}.client.invalid', common_name=name)
        certfile, keyfile = self.root / f'client-{name}.pem', self.root / f'client-{name}.key'
        leaf.cert_chain_pems[0].write_to_path(str(certfile))
        leaf.private_key_pem.write_to_path(str(keyfile))
        self.cert_users.add(name)
        return str(certfile), str(keyfile)

    # ---- faults

    def fail(self, method, path_regex, status=500, code='1', message='injected failure',
             times=1, match=None):
        """Answer matching requests with ONTAP's error envelope."""
        self._arm('fail', method, path_regex, match, times, status=status, code=str(code),
                  message=message)

    def fail_job(self, method, path_regex, code=13565952, message='injected job failure',
                 times=1, match=None):
        """Accept matching calls (202 + job) but end the job in failure; nothing changes."""
        self._arm('fail_job', method, path_regex, match, times, code=int(code), message=message)

    def slow_job(self, method, path_regex, seconds, times=1, match=None):
        """Keep the jobs of matching calls running `seconds` longer."""
        self._arm('slow_job', method, path_regex, match, times, seconds=seconds)

    def drop(self, method, path_regex, times=1, match=None):
        """Reset the TCP connection of matching requests without answering."""
        self._arm('drop', method, path_regex, match, times)

    def lose_answer(self, method, path_regex, times=1, match=None, status=None):
        """Carry out matching requests (their jobs start and, with return_timeout, run as
        usual), then reset the connection instead of answering: a reply lost on the way. With
        `status`, answer that instead with a proxy's HTML page (a gateway timing out, say)."""
        self._arm('lose_answer', method, path_regex, match, times, status=status)

    def _arm(self, kind, method, path_regex, match, times, **detail):
        """Add a fault; a dict `match` is compared with the body after dotted keys are expanded."""
        fault = _Fault(kind, method.upper(), re.compile(path_regex), match,
                       -1 if times is None else times, **detail)
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind, request):
        """The first armed fault of `kind` for this request, counted as used."""
        for fault in self._faults:
            if fault.kind == kind and fault.applies(request):
                if fault.remaining > 0:   # -1: armed with times=None, never runs out
                    fault.remaining -= 1
                return fault
        return None

    # ---- state helpers (called with the lock held)

    def _ensure_svm(self, name):
        return self._svms.setdefault(name, {'name': name, 'uuid': str(uuidlib.uuid4())})

    def _find_volume(self, name, svm):
        return next((v for v in self._volumes.values() if v.name == name and v.svm == svm), None)

    def _only_volume(self, name, svm, missing_ok=False):
        found = [v for v in self._volumes.values()
                 if v.name == name and (svm is None or v.svm == svm)]
        if len(found) > 1:
            raise LookupError(f'volume name {name} is in several SVMs; pass svm=')
        if not found and not missing_ok:
            raise LookupError(f'no volume {name}')
        return found[0] if found else None

    def _new_volume(self, name, svm, junction, size, uuid=None, vol_type='rw'):
        uuid = uuid or str(uuidlib.uuid4())
        path = self.root / 'volumes' / uuid
        vol = Volume(uuid, name, svm, junction, path, size, _now(self.utc_offset), type=vol_type)
        path.mkdir(parents=True)
        vol.snapdir.mkdir(parents=True)
        self._volumes[uuid] = vol
        return vol

    def _take_snapshot(self, vol, name, comment='', create_time=None, uuid=None):
        self._snap_seq += 1
        snap = Snapshot(uuid or str(uuidlib.uuid4()), name, comment, create_time or _now(self.utc_offset),
                        vol.snapdir / name, seq=self._snap_seq)
        shutil.copytree(vol.path, snap.path, symlinks=True)
        vol.snapshots[name] = snap
        return snap

    def _drop_snapshot(self, vol, snap):
        shutil.rmtree(snap.path)
        del vol.snapshots[snap.name]

    def _clones_of(self, vol, snap_name=None):
        return [v for v in self._volumes.values() if v.parent_volume is vol
                and (snap_name is None or v.parent_snapshot == snap_name)]

    def _release_parent_snapshot(self, clone):
        """A FlexClone is gone or split: its base snapshot stops being busy (ref §9)."""
        parent, snap = clone.parent_volume, clone.parent_volume.snapshots.get(clone.parent_snapshot)
        clone.is_flexclone, clone.parent_volume, clone.parent_snapshot = False, None, None
        if snap and not self._clones_of(parent, snap.name) and CLONE_OWNER in snap.owners:
            snap.owners.remove(CLONE_OWNER)

    def _volume_or_404(self, uuid):
        if uuid not in self._volumes:
            raise _not_found()
        return self._volumes[uuid]

    def _snapshot_or_404(self, vol, snap_uuid):
        for snap in vol.snapshots.values():
            if snap.uuid == snap_uuid:
                return snap
        raise _not_found()

    def _svm_from(self, body, prefix):
        """The SVM named by `<prefix>.name` / `<prefix>.uuid` in a body."""
        name, uuid = _body_str(body, f'{prefix}.name'), _body_str(body, f'{prefix}.uuid')
        if not (name or uuid):
            raise ApiError(400, '2', f'Missing value for field "{prefix}.name".', f'{prefix}.name')
        for svm in self._svms.values():
            if (name or svm['name']) == svm['name'] and (uuid or svm['uuid']) == svm['uuid']:
                return svm
        # Status and code for an unknown SVM are unconfirmed; 2621462 is the code
        # other ONTAP clients treat as "SVM does not exist".
        raise ApiError(404, '2621462', f'SVM "{name or uuid}" does not exist.', f'{prefix}.name')

    def _check_junction(self, svm, junction, vol=None):
        """nas.path rules for clone creation and PATCH (918252, ref §8)."""
        if junction in (None, ''):
            return None
        taken = any(v.junction == junction and v.svm == svm and v is not vol
                    for v in self._volumes.values())
        if not junction.startswith('/') or junction.endswith('/') or taken:
            raise ApiError(400, '918252', f'Invalid junction path "{junction}": it must start '
                           'with "/", not end with "/" and be unique in the SVM.', 'nas.path')
        return junction

    def _resolve(self, vol, rel, target='path'):
        """Map a volume-relative path to (real path, read_only).

        `.snapshot/<name>/…` maps into that snapshot's frozen copy (read-only).
        A `..` segment, or a symlink leading outside the volume, is refused.
        """
        parts = [part for part in rel.split('/') if part not in ('', '.')]
        base, read_only = vol.path, False
        if parts[:1] == ['.snapshot']:
            base, read_only, parts = vol.snapdir, True, parts[1:]
        real = base.joinpath(*parts)
        if '..' in parts or (_links_below(str(base), parts) and not real.resolve().is_relative_to(_resolved(base))):
            raise ApiError(400, '262197', f'Invalid path "{rel}": it leaves the volume.', target)
        return real, read_only

    # ---- records

    def _volume_record(self, vol, space=True):
        """A volume's record; without `space`, its used space is left uncounted (a walk through
        every file of the volume here, where ONTAP keeps the count)."""
        used = _tree_size(vol.path) if space else 0
        svm = self._svms[vol.svm]
        record = {
            'uuid': vol.uuid, 'name': vol.name, 'comment': vol.comment,
            'create_time': vol.create_time, 'state': vol.state, 'type': vol.type,
            'style': vol.style, 'size': vol.size,
            'space': {'size': vol.size, 'used': used, 'available': max(vol.size - used, 0),
                      'percent_used': used * 100 // vol.size if vol.size else 0,
                      # full copies here; on ONTAP only the blocks changed since
                      'snapshot': {'used': _tree_size(vol.snapdir) if space else 0,
                                   'reserve_percent': vol.snapshot_reserve_percent,
                                   'autodelete_enabled': vol.snapshot_autodelete}},
            'snapshot_count': len(vol.snapshots),
            'snapshot_policy': {'name': vol.snapshot_policy},
            'svm': dict(svm),
            'aggregates': [dict(self.aggregate)],
            'nas': {'export_policy': {'name': vol.export_policy}},
            'clone': {'is_flexclone': vol.is_flexclone,
                      'has_flexclone': bool(self._clones_of(vol)),
                      'split_initiated': False},
            '_links': {'self': {'href': f'/api/storage/volumes/{vol.uuid}'}},
        }
        if vol.junction:
            record['nas']['path'] = vol.junction
        if vol.is_flexclone:
            parent = vol.parent_volume
            record['clone'].update(
                parent_volume={'name': parent.name, 'uuid': parent.uuid},
                parent_snapshot={'name': vol.parent_snapshot,
                                 'uuid': parent.snapshots[vol.parent_snapshot].uuid},
                parent_svm=dict(self._svms[parent.svm]))
        return record

    def _snapshot_record(self, vol, snap, size=True):
        """A snapshot's record; without `size`, its size is left uncounted (see _volume_record)."""
        record = {
            'uuid': snap.uuid, 'name': snap.name, 'comment': snap.comment,
            'create_time': snap.create_time, 'size': _tree_size(snap.path) if size else 0, 'state': 'valid',
            'volume': {'name': vol.name, 'uuid': vol.uuid}, 'svm': dict(self._svms[vol.svm]),
            '_links': {'self': {'href': f'/api/storage/volumes/{vol.uuid}/snapshots/{snap.uuid}'}},
        }
        # Empty owners are left out, like ONTAP leaves out unset fields (unconfirmed).
        for name in ('owners', 'expiry_time', 'snapmirror_label'):
            if getattr(snap, name):
                record[name] = getattr(snap, name)
        return record

    def _file_record(self, vol, path, name, real, read_only):
        """A files-API record; `path` is the directory asked for (or the file itself)."""
        info = real.lstat()
        kind = ('directory' if stat.S_ISDIR(info.st_mode)
                else 'symlink' if stat.S_ISLNK(info.st_mode) else 'file')
        href = f'/api/storage/volumes/{vol.uuid}/files/' + _encode_path(f'{path}/{name}'.strip('/'))
        record = {
            'path': path, 'name': name, 'type': kind, 'size': info.st_size,
            'bytes_used': info.st_blocks * 512, 'creation_time': _iso_from_timestamp(info.st_ctime),
            'modified_time': _iso_from_timestamp(info.st_mtime),
            'changed_time': _iso_from_timestamp(info.st_ctime),
            'accessed_time': _iso_from_timestamp(info.st_atime),
            'unix_permissions': int(oct(info.st_mode & 0o777)[2:]),
            'owner_id': info.st_uid, 'group_id': info.st_gid,
            'hard_links_count': info.st_nlink, 'inode_number': info.st_ino,
            'is_junction': False, 'is_snapshot': read_only,
            'volume': {'uuid': vol.uuid, 'name': vol.name},
            '_links': {'metadata': {'href': href + '?return_metadata=true'}},
        }
        if kind == 'directory':
            with os.scandir(real) as entries:     # the first entry, not a list of them all
                record['is_empty'] = next(entries, None) is None
            record['_links']['self'] = {'href': href}
        return record

    # ---- the query engine applied to a request

    def _instance(self, request, kind, record):
        """Instance GET: all non-expensive fields unless `fields=` says otherwise.

        Other query parameters are filters the record must pass (the official
        client repeats the POST's Location query here, ref §11); else 404.
        """
        query = request.query
        query.pop('return_timeout', None)
        ignore = _bool_value('ignore_unknown_fields', query.pop('ignore_unknown_fields', 'false'))
        include, exclude = _parse_fields(query.pop('fields', '*'), kind, ignore, self.version)
        for name, expression in query.items():
            if not kind.knows(name, self.version):
                raise _unexpected(name)
            if not _matches(_lookup(record, name), expression):
                raise _not_found(name)
        return _Reply(200, _select(record, include, exclude, kind, self.version))

    def _collection(self, request, kind, records, extra=()):
        """Collection GET: filters, fields, order_by, offset and pages (ref §1)."""
        query = request.query
        for name in (*extra, 'return_timeout'):
            query.pop(name, None)
        ignore = _bool_value('ignore_unknown_fields', query.pop('ignore_unknown_fields', 'false'))
        include, exclude = _parse_fields(query.pop('fields', ''), kind, ignore, self.version)
        paging = {name: query.pop(name) for name in _PAGE_PARAMS if name in query}
        for name in query:
            if not kind.knows(name, self.version):
                raise _unexpected(name)
        matched = [r for r in records
                   if all(_matches(_lookup(r, name), expr) for name, expr in query.items())]
        if 'order_by' in paging:
            matched = _ordered(matched, paging['order_by'], kind, self.version)
        offset = _int_value('offset', paging.get('offset', '0'), 0)
        limits = [_int_value('max_records', paging['max_records'], 1)] if 'max_records' in paging else []
        limits += [self.page_size] if self.page_size else []
        limit = min(limits) if limits else None
        page = matched[offset:offset + limit] if limit else matched[offset:]
        body = {'records': [_select(r, include, exclude, kind, self.version) for r in page],
                'num_records': len(page),
                '_links': {'self': {'href': request.raw_path + _query_string(request.query_items)}}}
        if not _bool_value('return_records', paging.get('return_records', 'true')):
            del body['records']
        headers = {}
        # A full page always gets a `next` link, even when nothing is left:
        # ONTAP does that too, and clients must cope with an empty last page.
        if limit and len(page) == limit:
            items = [(k, v) for k, v in request.query_items if k != 'offset']
            href = request.raw_path + _query_string(items + [('offset', str(offset + limit))])
            body['_links']['next'] = {'href': href}
            headers['Link'] = f'<{href}>; rel="next"'
        return _Reply(200, body, headers)

    # ---- jobs

    def _accept(self, request, operation, location=None, created=None):
        """Turn a validated mutation into a job (the dispatcher starts it)."""
        forced = self._take_fault('fail_job', request)
        slow = self._take_fault('slow_job', request)
        job = Job(str(uuidlib.uuid4()), f'{request.method} {request.path}', operation,
                  self.job_delay + (slow.seconds if slow else 0),
                  (forced.code, forced.message) if forced else None)
        self._jobs[job.uuid] = job
        return _Accepted(job, location, created)

    def _start_job(self, job):
        """Run at once when there is no delay (deterministic tests), else in a thread."""
        if job.delay > 0:
            threading.Thread(target=self._run_job, args=(job,), daemon=True).start()
        else:
            self._run_job(job)

    def _run_job(self, job):
        with self._lock:
            job.state = 'running'
        if job.delay > 0 and self._stopped.wait(job.delay):
            return   # emulator stopped: the job never finishes
        with self._lock:
            try:
                if job.failure:
                    raise JobError(*job.failure)
                job.operation()
            except JobError as err:
                job.state, job.code, job.message = 'failure', err.code, err.message
            except Exception as err:   # an emulator bug: show it in the job, not a hang
                log.exception('job %s failed', job.description)
                job.state, job.code, job.message = 'failure', 1, f'emulator error: {err!r}'
            else:
                job.state, job.message = 'success', 'success'
            job.end_time = _now()
        job.done.set()

    def _run_jobs(self, request, jobs):
        """Start the jobs; with return_timeout=N, wait up to N s for all of them.
        (None, finished) or (the first failed job, True)."""
        for job in jobs:
            self._start_job(job)
        timeout = _int_value('return_timeout', request.query.get('return_timeout', '0'),
                             0, MAX_RETURN_TIMEOUT)
        deadline = time.monotonic() + timeout
        finished = timeout > 0 and all(job.done.wait(max(0.0, deadline - time.monotonic())) for job in jobs)
        failed = next((job for job in jobs if job.state == 'failure'), None) if finished else None
        return failed, finished

    @staticmethod
    def _failure_reply(job):
        # NetApp's "Asynchronous processing" page: 200 only when the job completes
        # *successfully* within return_timeout; a job that fails by then is answered
        # as an error carrying its code and message (HTTP status unconfirmed: 400).
        return _Reply(400, {'error': {'message': job.message, 'code': str(job.code)}})

    def _jobs_reply(self, request, accepted):
        """A query-based call's answer: `num_records` and one job link per record in `jobs`
        (the shape the official client polls). Answered like a single job otherwise: 200 once
        all succeeded within return_timeout, a failure as its error (unconfirmed for
        collections: no answer of a real ONTAP seen)."""
        jobs = [each.job for each in accepted]
        failed, finished = self._run_jobs(request, jobs)
        if failed:
            return self._failure_reply(failed)
        body = {'num_records': len(jobs), 'jobs': [job.link() for job in jobs]}
        if self.collection_delete_answer == 'job':     # the swagger's model: {job, num_records}
            body = {'num_records': len(jobs), **({'job': jobs[0].link()} if jobs else {})}
        elif self.collection_delete_answer == 'bare':  # says nothing of what matched
            body = {}
        status = 200 if finished or not jobs else 202
        if status == 202 and self.collection_delete_answer == 'bare':
            body = {'job': jobs[0].link()}
        return _Reply(status, body)

    def _job_reply(self, request, accepted):
        """202 + job; with return_timeout=N, wait up to N s and answer 200/201 if done."""
        job = accepted.job
        failed, finished = self._run_jobs(request, [job])
        if failed:
            return self._failure_reply(failed)
        status = (201 if accepted.location else 200) if finished else 202
        body = {'job': job.link()}
        if accepted.created and _bool_value('return_records',
                                            request.query.get('return_records', 'false')):
            body.update(num_records=1, records=[accepted.created])
        headers = {'Location': accepted.location} if accepted.location else {}
        return _Reply(status, body, headers)

    # ---------------------------------------------------------------- handlers: cluster, SVMs, jobs

    @_route('GET', r'/api/cluster')
    def _get_cluster(self, request):
        generation, major, minor = self.version
        version = {'full': f'NetApp Release {self.release}: Mon Jan 01 00:00:00 UTC 2024',
                   'generation': generation, 'major': major, 'minor': minor}
        record = {'name': self.cluster_name, 'uuid': self.cluster_uuid, 'version': version,
                  '_links': {'self': {'href': '/api/cluster'}}}
        return self._instance(request, _CLUSTER, record)

    @_route('GET', r'/api/cluster/licensing/licenses')
    def _get_licenses(self, request):
        """The installed licence packages (`emu.licenses`), one record each."""
        records = [{'name': name, 'state': state, 'scope': 'cluster', 'description': f'{name} License',
                    '_links': {'self': {'href': f'/api/cluster/licensing/licenses/{name}'}}}
                   for name, state in sorted(self.licenses.items())]
        return self._collection(request, _LICENSE, records)

    # ---------------------------------------------------------------- handlers: SnapMirror

    def _snapmirror_record(self, relationship):
        vol, destination = relationship['source'], relationship['destination']
        record = {'uuid': relationship['uuid'],
                  'source': {'path': f'{vol.svm}:{vol.name}',
                             'svm': {'name': vol.svm, 'uuid': self._svms[vol.svm]['uuid']}},
                  'destination': {'path': destination, 'svm': {'name': destination.partition(':')[0]}},
                  'state': 'snapmirrored', 'healthy': True,
                  '_links': {'self': {'href': f'/api/snapmirror/relationships/{relationship["uuid"]}'}}}
        if self.destinations_name_policy:
            record['policy'] = dict(relationship['policy'])
        return record

    @_route('GET', r'/api/snapmirror/relationships')
    def _get_snapmirror_relationships(self, request):
        """A relationship is kept on its destination cluster: this one lists those whose source is
        here only with list_destinations_only=true (ontap-restapi-96 get-snapmirror-relationships:
        "This must be run on the cluster containing the source endpoint"); it is the destination of
        none. Whether the source's answer fills `policy` is unconfirmed: destinations_name_policy.
        Relationships of a volume deleted since are gone (ONTAP refuses to delete such a volume).
        """
        sources = _bool_value('list_destinations_only', request.query.get('list_destinations_only', 'false'))
        records = [self._snapmirror_record(r) for r in self._snapmirrors
                   if sources and r['source'].uuid in self._volumes]
        return self._collection(request, _SNAPMIRROR_RELATIONSHIP, records, extra=('list_destinations_only',))

    def _snapmirror_policy_record(self, policy):
        """A policy as this release shows it. From 9.10 a mirror of every snapshot is
        copy_all_source_snapshots with no retention (netapp_ontap SnapmirrorPolicy docs: "No
        retention properties can be specified" with it); before, the CLI's rule all_source_snapshots
        (keep 1) stands in `retention` (unconfirmed). `count` is a string, as NetApp's client has it
        (netapp_ontap models/snapmirror_policy_rule.py: count = Str; it refuses a number)."""
        record = {key: policy[key] for key in ('uuid', 'name', 'type', 'scope')}
        record['retention'] = [{'label': rule['label'], 'count': str(rule['count'])} for rule in policy['retention']]
        if policy['copy_all_source_snapshots']:
            if self.version >= (9, 10):
                record['copy_all_source_snapshots'] = True
            else:
                record['retention'] = [{'label': 'all_source_snapshots', 'count': '1'}]
        record['_links'] = {'self': {'href': f'/api/snapmirror/policies/{policy["uuid"]}'}}
        return record

    @_route('GET', r'/api/snapmirror/policies')
    def _get_snapmirror_policies(self, request):
        records = [self._snapmirror_policy_record(p) for p in self._snapmirror_policies.values()]
        return self._collection(request, _SNAPMIRROR_POLICY, records)

    @_route('GET', r'/api/snapmirror/policies/(?P<uuid>[^/]+)')
    def _get_snapmirror_policy(self, request, uuid):
        """A policy of this cluster; another cluster's uuid is unknown here: 404, code 4 (as for a
        volume, ref §4; the code for a policy is unconfirmed)."""
        if uuid not in self._snapmirror_policies:
            raise _not_found()
        return self._instance(request, _SNAPMIRROR_POLICY, self._snapmirror_policy_record(self._snapmirror_policies[uuid]))

    def _svm_records(self):
        return [{**svm, 'state': 'running', 'subtype': 'default',
                 '_links': {'self': {'href': f'/api/svm/svms/{svm["uuid"]}'}}}
                for svm in self._svms.values()]

    @_route('GET', r'/api/svm/svms')
    def _get_svms(self, request):
        return self._collection(request, _SVM, self._svm_records())

    @_route('GET', r'/api/svm/svms/(?P<uuid>[^/]+)')
    def _get_svm(self, request, uuid):
        record = next((r for r in self._svm_records() if r['uuid'] == uuid), None)
        if record is None:
            raise _not_found()
        return self._instance(request, _SVM, record)

    @_route('GET', r'/api/cluster/jobs')
    def _get_jobs(self, request):
        return self._collection(request, _JOB, [job.record() for job in self._jobs.values()])

    @_route('GET', r'/api/cluster/jobs/(?P<uuid>[^/]+)')
    def _get_job(self, request, uuid):
        if uuid not in self._jobs:
            raise _not_found()
        return self._instance(request, _JOB, self._jobs[uuid].record())

    # ---------------------------------------------------------------- handlers: volumes

    @_route('GET', r'/api/storage/volumes')
    def _get_volumes(self, request):
        space = _asks_for(request, 'space')
        records = [self._volume_record(v, space) for v in self._volumes.values()]
        return self._collection(request, _VOLUME, records)

    @_route('GET', _VOL)
    def _get_volume(self, request, vol_uuid):
        vol = self._volume_or_404(vol_uuid)
        return self._instance(request, _VOLUME, self._volume_record(vol, _asks_for(request, 'space', '*')))

    _VOLUME_POST_FIELDS = frozenset({
        'name', 'svm.name', 'svm.uuid', 'comment', 'size', 'type', 'aggregates', 'nas.path',
        'nas.export_policy.name', 'clone.is_flexclone', 'clone.parent_volume.name',
        'clone.parent_volume.uuid', 'clone.parent_snapshot.name', 'clone.parent_snapshot.uuid',
        'clone.parent_svm.name', 'clone.parent_svm.uuid'})

    @_route('POST', r'/api/storage/volumes', query=('return_records',))
    def _post_volume(self, request):
        """Create a FlexClone (ref §8), or a plain empty volume without `clone`."""
        body = request.body or {}
        _check_body(body, self._VOLUME_POST_FIELDS)
        name = _body_str(body, 'name', required=True)
        if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]{0,202}', name):
            # Code for a bad volume name unconfirmed (ref §4 gives only the rules).
            raise _invalid('name', name)
        svm = self._svm_from(body, 'svm')['name']
        junction = self._check_junction(svm, _body_str(body, 'nas.path'))
        vol_type = _body_str(body, 'type') or 'rw'
        uuid = str(uuidlib.uuid4())
        if _body_bool(body, 'clone.is_flexclone'):
            operation = self._flexclone_operation(body, uuid, name, svm, junction, vol_type)
        else:
            if vol_type not in ('rw', 'dp'):
                raise _invalid('type', vol_type)
            size = _get(body, 'size', 100 * 2**30)
            if not isinstance(size, int) or size <= 0:
                raise _invalid('size', size)

            def operation():
                self._check_new_volume_name(name, svm)
                self._new_volume(name, svm, junction, size, uuid, vol_type)
        return self._accept(request, operation,
                            location=f'/api/storage/volumes/?name={urllib.parse.quote(name, safe="")}',
                            created={'uuid': uuid, 'name': name})

    def _check_new_volume_name(self, name, svm):
        # Duplicate name: a job failure here (ref §8 lists 917526, not where it shows).
        if self._find_volume(name, svm):
            raise JobError(917526, f'Duplicate volume name "{name}" in SVM "{svm}".')

    def _flexclone_operation(self, body, uuid, name, svm, junction, vol_type):
        """Validate a FlexClone body up front and return the job's operation."""
        if 'aggregates' in body or 'size' in body:
            field_name = 'aggregates' if 'aggregates' in body else 'size'
            raise ApiError(400, '918247', f'Field "{field_name}" cannot be set when creating '
                           'a FlexClone volume.', field_name)
        if vol_type not in ('rw', 'dp'):
            raise ApiError(400, '918244', f'Invalid type "{vol_type}" for a FlexClone volume.',
                           'type')
        parent_svm = (self._svm_from(body, 'clone.parent_svm')['name']
                      if _get(body, 'clone.parent_svm') else svm)
        parent_name = _body_str(body, 'clone.parent_volume.name')
        parent_uuid = _body_str(body, 'clone.parent_volume.uuid')
        parent = (self._volumes.get(parent_uuid) if parent_uuid
                  else self._find_volume(parent_name, parent_svm) if parent_name else None)
        if parent is None or (parent_name and parent.name != parent_name):
            # Up front and 404 for a missing parent: unconfirmed (ref §8 names code 524601).
            raise ApiError(404, '524601', f'Parent volume "{parent_name or parent_uuid}" not '
                           'found.', 'clone.parent_volume.name')
        snap_name = _body_str(body, 'clone.parent_snapshot.name')
        snap_uuid = _body_str(body, 'clone.parent_snapshot.uuid')
        snap = None
        if snap_name or snap_uuid:
            by_uuid = next((s for s in parent.snapshots.values() if s.uuid == snap_uuid), None)
            by_name = parent.snapshots.get(snap_name)
            if snap_name and snap_uuid and by_name is not by_uuid:
                raise ApiError(400, '918243', 'clone.parent_snapshot.name and '
                               'clone.parent_snapshot.uuid refer to different snapshots.',
                               'clone.parent_snapshot.uuid')
            snap = by_name or by_uuid
            if snap is None:
                raise _not_found('clone.parent_snapshot.name')

        def operation():
            self._check_new_volume_name(name, svm)
            if parent.uuid not in self._volumes:
                raise JobError(524601, f'Parent volume "{parent.name}" not found.')
            base = snap
            if base is None:
                # Without a parent snapshot ONTAP takes one itself (CLI behaviour;
                # unconfirmed for REST, ref §8); the name follows the CLI's pattern.
                base = self._take_snapshot(parent, f'clone_{name}.0')
            elif parent.snapshots.get(base.name) is not base:
                raise JobError(4, "entry doesn't exist")
            clone = self._new_volume(name, svm, junction, parent.size, uuid, vol_type)
            shutil.copytree(base.path, clone.path, symlinks=True, dirs_exist_ok=True)
            clone.is_flexclone, clone.parent_volume, clone.parent_snapshot = True, parent, base.name
            clone.export_policy = parent.export_policy
            if CLONE_OWNER not in base.owners:
                base.owners.append(CLONE_OWNER)
        return operation

    _VOLUME_PATCH_FIELDS = frozenset({
        'comment', 'size', 'name', 'nas.path', 'nas.export_policy.name',
        'clone.split_initiated', 'restore_to.snapshot.name', 'restore_to.snapshot.uuid'})

    @_route('PATCH', _VOL, query=('restore_to.snapshot.name', 'restore_to.snapshot.uuid'))
    def _patch_volume(self, request, vol_uuid):
        """Restore (`restore_to.snapshot.*` in query or body, ref §7) or modify."""
        vol = self._volume_or_404(vol_uuid)
        body = request.body or {}
        _check_body(body, self._VOLUME_PATCH_FIELDS)
        query = request.query
        restore = {key: query.get(f'restore_to.snapshot.{key}')
                   or _body_str(body, f'restore_to.snapshot.{key}') for key in ('name', 'uuid')}
        if any(restore.values()):
            if set(_leaf_names(body)) - {'restore_to.snapshot.name', 'restore_to.snapshot.uuid'}:
                raise ApiError(400, '918251', 'A restore cannot be combined with other '
                               'modifications.', 'restore_to')
            return self._accept(request, lambda: self._restore(vol, **restore))
        return self._accept(request, self._modify_operation(vol, body))

    def _modify_operation(self, vol, body):
        """Validate a volume modification up front; return the job's operation."""
        changes = {}
        if 'nas' in body and 'path' in body['nas']:
            changes['junction'] = self._check_junction(vol.svm, _body_str(body, 'nas.path'), vol)
        if _get(body, 'nas.export_policy.name') is not None:
            changes['export_policy'] = _body_str(body, 'nas.export_policy.name')
        if 'comment' in body:
            changes['comment'] = _body_str(body, 'comment') or ''
        if 'size' in body:
            if not isinstance(body['size'], int) or body['size'] <= 0:
                raise _invalid('size', body['size'])
            changes['size'] = body['size']
        if 'name' in body:
            name = _body_str(body, 'name')
            if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]{0,202}', name):
                raise _invalid('name', name)
            changes['name'] = name
        split = _body_bool(body, 'clone.split_initiated')

        def operation():
            if vol.uuid not in self._volumes:
                raise JobError(4, "entry doesn't exist")
            if changes.get('name', vol.name) != vol.name:
                self._check_new_volume_name(changes['name'], vol.svm)
            for attr, value in changes.items():
                setattr(vol, attr, value)
            if split and vol.is_flexclone:   # a split finishes at once here
                self._release_parent_snapshot(vol)
        return operation

    def _restore(self, vol, name=None, uuid=None):
        """SnapRestore: the active file system becomes the snapshot; newer ones go (ref §7)."""
        snap = next((s for s in vol.snapshots.values()
                     if (name or s.name) == s.name and (uuid or s.uuid) == s.uuid), None)
        if snap is None or vol.uuid not in self._volumes:
            # Code 4 for an unknown snapshot was observed in a failing job (ref §7).
            raise JobError(4, "entry doesn't exist")
        newer = [s for s in vol.snapshots.values() if s.sort_key() > snap.sort_key()]
        busy = [s.name for s in newer if s.owners]
        if busy:
            # Busy newer snapshots block the restore; code 9437886 ("newer locked
            # snapshots exist") is the closest documented one (unconfirmed, ref §7).
            raise JobError(9437886, f'Cannot restore volume "{vol.name}" to snapshot '
                           f'"{snap.name}": newer snapshots are busy or locked: '
                           f'{", ".join(busy)}.')
        shutil.rmtree(vol.path)
        shutil.copytree(snap.path, vol.path, symlinks=True)
        for newer_snap in newer:
            self._drop_snapshot(vol, newer_snap)

    @_route('DELETE', _VOL, query=('force',))
    def _delete_volume(self, request, vol_uuid):
        vol = self._volume_or_404(vol_uuid)
        # `force` (skip the recovery queue) is 9.12+ (ref §9): older releases refuse it above.
        _bool_value('force', request.query.get('force', 'false'))

        def operation():
            if vol.uuid not in self._volumes:
                raise JobError(4, "entry doesn't exist")
            clones = [clone.name for clone in self._clones_of(vol)]
            if clones:
                # Code unconfirmed (ref §9); 8 is ONTAP's generic "resource in use".
                raise JobError(8, f'Volume "{vol.name}" in SVM "{vol.svm}" cannot be deleted '
                               f'because it has FlexClone volumes: {", ".join(clones)}.')
            if vol.is_flexclone:
                self._release_parent_snapshot(vol)
            del self._volumes[vol.uuid]
            self._remove_later(vol.path, vol.snapdir)
        return self._accept(request, operation)

    def _remove_later(self, *trees):
        """Take directory trees out of the volumes at once, and remove their files in a thread of their
        own: a volume's files are copies here, and ONTAP, too, frees a deleted volume's space in
        the background (its recovery queue)."""
        trash = self.root / 'trash' / str(uuidlib.uuid4())
        trash.mkdir(parents=True)
        for number, tree in enumerate(trees):
            tree.rename(trash / str(number))
        threading.Thread(target=shutil.rmtree, args=(trash,), daemon=True).start()

    # ---------------------------------------------------------------- handlers: snapshots

    @_route('GET', _VOL + r'/snapshots')
    def _get_snapshots(self, request, vol_uuid):
        vol = self._volume_or_404(vol_uuid)
        snaps = sorted(vol.snapshots.values(), key=lambda s: s.seq)
        size = _asks_for(request, 'size')
        return self._collection(request, _SNAPSHOT, [self._snapshot_record(vol, s, size) for s in snaps])

    @_route('GET', _VOL + r'/snapshots/(?P<snap_uuid>[^/]+)')
    def _get_snapshot(self, request, vol_uuid, snap_uuid):
        vol = self._volume_or_404(vol_uuid)
        snap = self._snapshot_or_404(vol, snap_uuid)
        return self._instance(request, _SNAPSHOT, self._snapshot_record(vol, snap, _asks_for(request, 'size', '*')))

    _SNAPSHOT_FIELDS = frozenset({'name', 'comment', 'expiry_time', 'snapmirror_label'})

    @staticmethod
    def _check_snapshot_name(name):
        # No documented character set; `:` and `+` are used in practice and 255 is
        # the safe length (ref §6, unconfirmed). '/' would escape the .snapshot dir.
        if not 0 < len(name) <= 255 or '/' in name or name in ('.', '..'):
            raise ApiError(400, '1638518', f'Invalid snapshot name "{name}".', 'name')

    @_route('POST', _VOL + r'/snapshots', query=('return_records',))
    def _post_snapshot(self, request, vol_uuid):
        vol = self._volume_or_404(vol_uuid)
        body = request.body or {}
        _check_body(body, self._SNAPSHOT_FIELDS)
        name = _body_str(body, 'name', required=True)
        self._check_snapshot_name(name)
        comment = self._check_comment(_body_str(body, 'comment') or '')
        expiry, label = _body_str(body, 'expiry_time'), _body_str(body, 'snapmirror_label')
        if expiry:
            _parse_time('expiry_time', expiry)
        snap_uuid = str(uuidlib.uuid4())

        def operation():
            if vol.uuid not in self._volumes:
                raise JobError(4, "entry doesn't exist")
            self._check_new_snapshot_name(vol, name)
            snap = self._take_snapshot(vol, name, comment, uuid=snap_uuid)
            snap.expiry_time, snap.snapmirror_label = expiry, label
        location = (f'/api/storage/volumes/{vol.uuid}/snapshots/'
                    f'?name={urllib.parse.quote(name, safe="")}')
        return self._accept(request, operation, location=location,
                            created={'uuid': snap_uuid, 'name': name})

    @staticmethod
    def _check_comment(comment):
        # Up to 255 characters (the ONTAP CLI's `volume snapshot create -comment`; FSx for ONTAP's
        # API reference, OntapSnapshot Comment: "Maximum Length: 255"; netapp.ontap's
        # na_ontap_snapshot: "The size of the comment can be at most 255 characters"), on POST and
        # PATCH alike; the code of the refusal is unconfirmed.
        if len(comment) > 255:
            raise _invalid('comment', comment)
        return comment

    @staticmethod
    def _check_new_snapshot_name(vol, name):
        # A duplicate name fails the job rather than the request (either is
        # possible, ref §6); clients must handle job failures anyway.
        if name in vol.snapshots:
            raise JobError(525059, f'Snapshot copy "{name}" of volume "{vol.name}" on '
                           f'Vserver "{vol.svm}" already exists.')

    @_route('PATCH', _VOL + r'/snapshots/(?P<snap_uuid>[^/]+)')
    def _patch_snapshot(self, request, vol_uuid, snap_uuid):
        """Rename a snapshot or change its comment (storage hold), expiry_time or snapmirror_label:
        "Update a volume Snapshot copy", PATCH /storage/volumes/{volume.uuid}/snapshots/{uuid},
        "Introduced In: 9.6", `comment` "an optional attribute for POST or PATCH"
        (https://docs.netapp.com/us-en/ontap-restapi-98/patch-storage-volumes-snapshots-.html, and
        the same in ontap-restapi-96 and -9161); a job, as every change here (ref §6)."""
        vol = self._volume_or_404(vol_uuid)
        snap = self._snapshot_or_404(vol, snap_uuid)
        body = request.body or {}
        _check_body(body, self._SNAPSHOT_FIELDS)
        changes = {name: _body_str(body, name) for name in self._SNAPSHOT_FIELDS if name in body}
        if 'name' in changes:
            self._check_snapshot_name(changes['name'] or '')
        if 'comment' in changes:
            changes['comment'] = self._check_comment(changes['comment'] or '')

        def operation():
            if vol.snapshots.get(snap.name) is not snap:
                raise JobError(1638600, f'Snapshot copy "{snap.name}" does not exist.')
            new_name = changes.pop('name', snap.name)
            if new_name != snap.name:
                self._rename_snapshot(vol, snap, new_name)
            for attr, value in changes.items():
                setattr(snap, attr, value)
        return self._accept(request, operation)

    def _rename_snapshot(self, vol, snap, new_name):
        self._check_new_snapshot_name(vol, new_name)
        for clone in self._clones_of(vol, snap.name):
            clone.parent_snapshot = new_name
        del vol.snapshots[snap.name]
        snap.path = snap.path.rename(vol.snapdir / new_name)
        snap.name = new_name
        vol.snapshots[new_name] = snap

    @_route('DELETE', _VOL + r'/snapshots/(?P<snap_uuid>[^/]+)')
    def _delete_snapshot(self, request, vol_uuid, snap_uuid):
        vol = self._volume_or_404(vol_uuid)
        snap = self._snapshot_or_404(vol, snap_uuid)
        return self._accept(request, self._snapshot_deletion(vol, snap))

    @_route('DELETE', _VOL + r'/snapshots', query=FILTERS)
    def _delete_snapshots(self, request, vol_uuid):
        """Query-based DELETE: "ONTAP supports query-based DELETE or PATCH for all
        collection endpoints" (REST API reference, Getting started); one job per
        snapshot that passes the filters, as the official client expects (`jobs`)."""
        vol = self._volume_or_404(vol_uuid)
        filters = {name: expression for name, expression in request.query.items()
                   if name != 'return_timeout'}
        for name in filters:
            if not _SNAPSHOT.knows(name, self.version):
                raise _unexpected(name)
        matched = [snap for snap in sorted(vol.snapshots.values(), key=lambda s: s.seq)
                   if all(_matches(_lookup(self._snapshot_record(vol, snap), name), expression)
                          for name, expression in filters.items())]
        return [self._accept(request, self._snapshot_deletion(vol, snap)) for snap in matched]

    def _snapshot_deletion(self, vol, snap):
        """The job operation that deletes one snapshot."""
        def operation():
            if vol.snapshots.get(snap.name) is not snap:
                raise JobError(1638600, f'Snapshot copy "{snap.name}" does not exist.')
            expiry = snap.expiry_time and _parse_time('expiry_time', snap.expiry_time)
            if snap.busy or (expiry and expiry > datetime.datetime.now().astimezone()):
                # A snapshot backing a FlexClone fails the job like this (ref §6).
                raise JobError(1638555, f'Snapshot copy "{snap.name}" of volume "{vol.name}" '
                               f'on Vserver "{vol.svm}" has not expired or is locked. Use the '
                               '"snapshot show -fields owners, expiry-time" command to view '
                               'the expiry and lock status of the Snapshot copy.')
            self._drop_snapshot(vol, snap)
        return operation

    # ---------------------------------------------------------------- handlers: file clone

    # `range` and `token_uuid` (sub-file clones, split-load tokens) are not emulated.
    _FILE_CLONE_FIELDS = frozenset({
        'volume.uuid', 'volume.name', 'source_path', 'destination_path',
        'overwrite_destination', 'autodelete', 'is_backup'})

    @_route('POST', r'/api/storage/file/clone')
    def _post_file_clone(self, request):
        """Clone one file inside a volume: a real byte copy here (ref §5)."""
        body = request.body or {}
        _check_body(body, self._FILE_CLONE_FIELDS)
        vol = self._volumes.get(_body_str(body, 'volume.uuid', required=True))
        if vol is None:
            raise _not_found('volume.uuid')
        vol_name = _body_str(body, 'volume.name')
        if vol_name and vol_name != vol.name:
            raise ApiError(400, '918236', f'volume.name "{vol_name}" does not match '
                           'volume.uuid.', 'volume.name')
        source_rel = _relative_path('source_path', _body_str(body, 'source_path', required=True))
        dest_rel = _relative_path('destination_path',
                                  _body_str(body, 'destination_path', required=True))
        source, _ = self._resolve(vol, source_rel, 'source_path')
        dest, dest_read_only = self._resolve(vol, dest_rel, 'destination_path')
        overwrite = _body_bool(body, 'overwrite_destination')
        _body_bool(body, 'autodelete')
        _body_bool(body, 'is_backup')

        def operation():
            # A node at its maximum split load "temporarily stops accepting requests to create
            # FlexClone files ... and issues an EBUSY error message" (docs.netapp.com, ontap,
            # create-flexclone-file-flexclone-lun-task). How the REST API says so is undocumented:
            # here as a failed job with the documented "Clone start failed" and the reason in
            # its text, as ONTAP tools quote it ("Reached maximum split load allowed on the
            # node", NetApp KB on VASA Provider snapshot timeouts): unconfirmed.
            # (a job's operation runs under the emulator's lock)
            refused = self.split_load_refusals > 0
            self.split_load_refusals -= refused
            if refused:
                raise JobError(13565952, 'Clone start failed. Reason: Reached maximum split load allowed on the '
                               'node (EBUSY).')
            # 917864 "cannot get file handle" for a missing source (ref §5) and,
            # by the same logic, a missing destination directory (unconfirmed).
            if vol.uuid not in self._volumes or not source.is_file():
                raise JobError(917864, f'Cannot get file handle for "{source_rel}".')
            if not dest.parent.is_dir():
                raise JobError(917864, f'Cannot get file handle for the directory of '
                               f'"{dest_rel}".')
            # Code and text for an existing destination are unconfirmed (ref §5);
            # 13565952 is the documented "clone start failed".
            if dest_read_only:
                raise JobError(13565952, f'Clone start failed: "{dest_rel}" is in a '
                               'read-only snapshot.')
            if dest.exists() and not overwrite:
                raise JobError(13565952, f'Clone start failed: destination "{dest_rel}" '
                               'already exists.')
            shutil.copyfile(source, dest)
            # How long ONTAP keeps a snapshot busy after a clone from it is unconfirmed; the
            # tool's issue expects "a moment", so a test chooses it.
            parts = [part for part in source_rel.split('/') if part not in ('', '.')]
            if parts[:1] == ['.snapshot'] and len(parts) > 1 and parts[1] in vol.snapshots:
                snap = vol.snapshots[parts[1]]
                snap.busy_until = max(snap.busy_until, time.monotonic() + self.busy_after_clone)
            if self.on_clone:
                self.on_clone(vol, source_rel, dest_rel)
        return self._accept(request, operation)

    # ---------------------------------------------------------------- handlers: files API

    def _files_volume(self, uuid):
        if uuid not in self._volumes:
            raise ApiError(404, '918235', f'Volume "{uuid}" does not exist.', 'volume.uuid')
        return self._volumes[uuid]

    @staticmethod
    def _missing_file(path):
        # HTTP status for 6684674 is unconfirmed; 404 is the natural one (ref §10).
        return ApiError(404, '6684674', f'No such file or directory: "{path}".', 'path')

    @_route('GET', _VOL + r'/files(?:/(?P<path>[^/]*))?')
    def _get_files(self, request, vol_uuid, path=None):
        """List a directory (with `.` and `..`), or one path with return_metadata=true."""
        vol = self._files_volume(vol_uuid)
        # Root listing path: "" for …/files, as sent otherwise (unconfirmed, ref §10).
        path = path or ''
        real, read_only = self._resolve(vol, path)
        if not real.exists() and not real.is_symlink():
            raise self._missing_file(path)
        if 'length' in request.query and not request.query.get('return_metadata'):
            return self._read_file(request, path, real)
        metadata = _bool_value('return_metadata', request.query.get('return_metadata', 'false'))
        if metadata or not real.is_dir():
            name = path.rstrip('/').rpartition('/')[2]
            records = [self._file_record(vol, path, name, real, read_only)]
        else:
            entries = [('.', real), ('..', real if real in (vol.path, vol.snapdir) else real.parent)]
            # `.snapshot` is hidden in listings of the root, as with the default
            # snapdir visibility; it is reachable by name.
            entries += [(child.name, child) for child in sorted(real.iterdir())]
            records = [self._file_record(vol, path, name, entry, read_only)
                       for name, entry in entries]
        return self._collection(request, _FILE, records, extra=('return_metadata',))

    def _read_file(self, request, path, real):
        """A file's data: GET …/files/{path}?byte_offset=&length= with "Accept: multipart/form-data",
        at most 1 MB (netapp_ontap resources/file_info.py, "File data"). The answer is one
        form-data part with the file's name as its filename, read as NetApp's client reads it
        (resource.py, _parse_multipart_response); the part's name ("file" here), what another
        Accept gets, the codes of the refusals and what a read past the end gives (fewer bytes
        here, as read(2)) are unconfirmed."""
        if 'multipart/form-data' not in request.accept:
            raise ApiError(400, '262197', 'Reading file data requires "Accept: multipart/form-data".', 'length')
        offset = _int_value('byte_offset', request.query.get('byte_offset', '0'), 0)
        length = _int_value('length', request.query['length'], 0, FILE_READ_MAX)
        if not real.is_file():
            raise ApiError(400, '262197', f'"{path}" is not a file.', 'path')
        with open(real, 'rb') as file:
            file.seek(offset)
            data = file.read(length)
        boundary = uuidlib.uuid4().hex
        name = path.rpartition('/')[2]
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                'Content-Type: application/octet-stream\r\n\r\n').encode() + data + f'\r\n--{boundary}--\r\n'.encode()
        return _Reply(200, body, {'Content-Type': f'multipart/form-data; boundary={boundary}'})

    def _writable_file(self, vol, path):
        real, read_only = self._resolve(vol, path)
        if read_only:
            raise ApiError(400, '131102', f'"{path}" is on a read-only file system '
                           '(a snapshot).', 'path')
        if real == vol.path:
            raise ApiError(400, '262197', 'The volume root cannot be changed.', 'path')
        return real

    @_route('DELETE', _VOL + r'/files/(?P<path>[^/]+)', query=('recurse',))
    def _delete_file(self, request, vol_uuid, path):
        vol = self._files_volume(vol_uuid)
        real = self._writable_file(vol, path)
        recurse = _bool_value('recurse', request.query.get('recurse', 'false'))
        if not real.exists() and not real.is_symlink():
            raise self._missing_file(path)
        if real.is_dir() and not real.is_symlink() and any(real.iterdir()) and not recurse:
            raise ApiError(400, '131138', f'Directory "{path}" is not empty.', 'path')

        def operation():
            if real.is_dir() and not real.is_symlink():
                shutil.rmtree(real)
            elif real.exists() or real.is_symlink():
                real.unlink()
            else:
                raise JobError(6684674, f'No such file or directory: "{path}".')
        if self.file_delete_jobs:
            # "DELETE /storage/volumes/{volume.uuid}/files/{path}" lists 202 with a job as an
            # answer besides 200 (ontap-restapi files endpoint, 9.8+; ref §13).
            return self._accept(request, operation)
        operation()
        return _Reply(200, {})

    def _write_new_file(self, vol, path, request):
        """POST …/files/{path} with a multipart/form-data body: "Creates a new file with the supplied
        data" (ontap-restapi post-storage-volumes-files-, "Introduced In: 9.8"; up to 1 MB, as NetApp's
        client reads and writes: netapp_ontap file_info.py). The field is `data`, as that client sends
        it. `overwrite` (default false: "If false, and the file exists, the write will fail") writes
        into an existing file from `byte_offset` ("Use -1 to append (default)"), never making it
        shorter, as pwrite(2) would. Answered at once with 201 and no job, and the codes of the
        refusals: unconfirmed."""
        if set(request.form) != {'data'}:
            raise _unexpected(next(iter(set(request.form) - {'data'}), 'data'))
        overwrite = _bool_value('overwrite', request.query.get('overwrite', 'false'))
        offset = _int_value('byte_offset', request.query.get('byte_offset', '-1'), -1)
        data = request.form['data']
        if len(data) > FILE_READ_MAX:
            raise ApiError(400, '262197', f'At most {FILE_READ_MAX} bytes are written at once.', 'data')
        real = self._writable_file(vol, path)
        if real.exists() and not overwrite:
            raise ApiError(409, '1', f'"{path}" already exists.', 'path')
        if not real.parent.is_dir():
            raise self._missing_file(real.parent.relative_to(vol.path).as_posix())
        if real.is_dir():
            raise ApiError(400, '262197', f'"{path}" is a directory.', 'path')
        with open(real, 'r+b' if real.exists() else 'wb') as file:
            file.seek(max(offset, 0), os.SEEK_SET if offset >= 0 else os.SEEK_END)
            file.write(data)
        return _Reply(201, {})

    @_route('PATCH', _VOL + r'/files/(?P<path>[^/]+)')
    def _patch_file(self, request, vol_uuid, path):
        """Rename/move with {"path": new}, or truncate/extend with {"size": n}."""
        vol = self._files_volume(vol_uuid)
        body = request.body or {}
        _check_body(body, {'path', 'size'})
        real = self._writable_file(vol, path)
        if not real.exists() and not real.is_symlink():
            raise self._missing_file(path)
        if 'size' in body:
            if not isinstance(body['size'], int) or body['size'] < 0 or real.is_dir():
                raise _invalid('size', body['size'])
            os.truncate(real, body['size'])
        if 'path' in body:
            new_rel = _body_str(body, 'path')
            target = self._writable_file(vol, new_rel)
            if target.is_dir():
                raise ApiError(400, '6488083', f'A directory named "{new_rel}" exists.', 'path')
            if not target.parent.is_dir():
                raise ApiError(400, '6488082', f'Cannot rename "{path}" to "{new_rel}".', 'path')
            # An existing target file is replaced, as rename(2) does (unconfirmed, ref §10).
            os.replace(real, target)
        return _Reply(200, {})

    @_route('POST', _VOL + r'/files/(?P<path>[^/]+)', query=('overwrite', 'byte_offset', 'return_records'))
    def _post_file(self, request, vol_uuid, path):
        """Create a directory: {"type": "directory", "unix_permissions": 755}; or, with a
        multipart/form-data body, a file holding its field `data` (9.8+)."""
        vol = self._files_volume(vol_uuid)
        if request.form is not None:
            return self._write_new_file(vol, path, request)
        body = request.body or {}
        _check_body(body, {'type', 'unix_permissions'})
        if _get(body, 'type') != 'directory':
            raise _invalid('type', _get(body, 'type'))
        real = self._writable_file(vol, path)
        if real.exists():
            raise ApiError(409, '1', f'"{path}" already exists.', 'path')
        if not real.parent.is_dir():
            raise self._missing_file(real.parent.relative_to(vol.path).as_posix())
        permissions = _get(body, 'unix_permissions', 755)
        try:
            mode = int(str(permissions), 8)
        except ValueError:
            raise _invalid('unix_permissions', permissions) from None
        real.mkdir()
        real.chmod(mode)
        return _Reply(201, {})

    # ---------------------------------------------------------------- handlers: private CLI

    @_route('POST', r'/api/private/cli/volume/snapshot/restore')
    def _cli_restore(self, request):
        """Documented form: all CLI parameters in the JSON body (ref §7)."""
        body = request.body or {}
        _check_body(body, {'vserver', 'volume', 'snapshot', 'force', 'privilege_level'})
        return self._cli_restore_with({k: v for k, v in body.items() if isinstance(v, str)})

    @_route('PATCH', r'/api/private/cli/volume/snapshot/restore',
            query=('vserver', 'volume', 'snapshot', 'force', 'privilege_level'))
    def _cli_restore_patch(self, request):
        """The original script's form: parameters in the query (ref pitfall 12)."""
        return self._cli_restore_with(request.query)

    def _cli_restore_with(self, params):
        """Restore synchronously; errors in the envelope, 500 unless mapped (ref §3)."""
        for name in ('vserver', 'volume', 'snapshot'):
            if not params.get(name):
                raise ApiError(400, '2', f'Missing value for field "{name}".', name)
        vol = self._find_volume(params['volume'], params['vserver'])
        if vol is None:
            raise _not_found('volume')
        try:
            self._restore(vol, name=params['snapshot'])
        except JobError as err:
            raise ApiError(404 if err.code == 4 else 500, err.code, err.message) from None
        return _Reply(200, {})

    # ---------------------------------------------------------------- request dispatch

    def _serve(self, handler):
        """Answer one HTTP request on `handler` (a _Handler): log, hook, auth, faults, route."""
        request = _parse_request(handler)
        record = {'method': request.method, 'path': request.path,
                  'query': request.query, 'body': request.raw_body,
                  'status': None, 'time': time.monotonic()}
        with self._lock:
            self._seq += 1
            record['seq'] = self._seq
            self.requests.append(record)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self._serve_recorded(handler, request, record)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _serve_recorded(self, handler, request, record):
        if self.on_request:
            self.on_request(record)
        if self.latency:
            time.sleep(self.latency)
        try:
            reply = self._answer(handler, request)
        except ApiError as err:
            reply = _Reply(err.status, err.body(), err.headers)
        except Exception as err:   # an emulator bug: answer it rather than hang the client
            log.exception('%s %s failed', request.method, request.path)
            reply = _Reply(500, {'error': {'message': f'emulator error: {err!r}', 'code': '1'}})
        with self._lock:
            lost = reply is not None and self._take_fault('lose_answer', request)
        if lost and lost.status:
            reply = _Reply(lost.status, f'<html><body>{lost.status} Gateway Time-out</body></html>'.encode())
        elif reply is None or lost:
            _reset_connection(handler)
            return
        record['status'] = reply.status
        _send(handler, reply)

    def _answer(self, handler, request):
        """The reply for `request`, or None to drop the connection."""
        if self._authenticate(handler) is None:
            # ONTAP's 401 body may not be JSON (ref §3); the envelope is friendlier.
            raise ApiError(401, '6', 'Authentication failed.',
                           headers={'WWW-Authenticate': 'Basic realm="ONTAP"'})
        if request.body is _BAD_JSON:
            raise ApiError(400, '2', 'The request body is not valid JSON.')
        with self._lock:
            if self._take_fault('drop', request):
                return None
            fault = self._take_fault('fail', request)
        if fault:
            raise ApiError(fault.status, fault.code, fault.message)
        handler_func, params, allowed = self._route_for(request)
        for name in request.query:
            if _RELEASE_OF_PARAMETER.get(name, (0,)) > self.version:
                raise _unexpected(name)
        if request.method != 'GET' and allowed is not FILTERS:
            for name in request.query:
                if name not in allowed and name != 'return_timeout':
                    raise _unexpected(name)
        _int_value('return_timeout', request.query.get('return_timeout', '0'),
                   0, MAX_RETURN_TIMEOUT)
        if request.method in ('GET', 'DELETE') and request.body:
            # The official client sends `{}` on DELETE; ONTAP tolerates that (ref §0).
            raise ApiError(400, '262198', f'A request body is not allowed on {request.method}.')
        with self._lock:
            result = handler_func(self, request, **params)
        if isinstance(result, _Accepted):
            return self._job_reply(request, result)
        if isinstance(result, list):
            return self._jobs_reply(request, result)
        return result

    def _route_for(self, request):
        route_path = request.raw_path.rstrip('/') or '/'
        methods = []
        for method, pattern, allowed, handler_func in _ROUTES:
            found = pattern.fullmatch(route_path)
            if not found:
                continue
            if method == request.method:
                params = {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()
                          if v is not None}
                return handler_func, params, allowed
            methods.append(method)
        if methods:
            raise ApiError(405, '3', f'The method "{request.method}" is not supported here.',
                           headers={'Allow': ', '.join(sorted(set(methods)))})
        raise ApiError(404, '4', 'API not found', 'uri')

    def _authenticate(self, handler):
        """The user: a known client certificate's CN, else basic auth (UTF-8), else None."""
        cert = handler.connection.getpeercert()
        if cert:
            names = dict(pair for rdn in cert.get('subject', ()) for pair in rdn)
            if names.get('commonName') in self.cert_users:
                return names['commonName']
        scheme, _, encoded = handler.headers.get('Authorization', '').partition(' ')
        if scheme.lower() != 'basic':
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(':')
        except ValueError:
            return None
        return user if user in self.users and self.users[user] == password else None


# ---------------------------------------------------------------- HTTP server

_BAD_JSON = object()


def _parse_request(handler):
    """Read the body and split the target into path and query."""
    length = int(handler.headers.get('Content-Length') or 0)
    raw = handler.rfile.read(length) if length else b''
    form = _parse_form(handler.headers.get('Content-Type', ''), raw)
    if form is not None:
        raw = b''
    try:
        raw_body = json.loads(raw) if raw.strip() else None
    except ValueError:
        raw_body = _BAD_JSON
    if isinstance(raw_body, dict):
        body = _expand_dotted(raw_body)
    else:   # ONTAP bodies are JSON objects
        body = None if raw_body is None else _BAD_JSON
    raw_path, _, raw_query = handler.path.partition('?')
    return _Request(method=handler.command, raw_path=raw_path,
                   path=urllib.parse.unquote(raw_path),
                   query_items=urllib.parse.parse_qsl(raw_query, keep_blank_values=True),
                   body=body, raw_body=None if raw_body is _BAD_JSON else raw_body, form=form,
                   accept=handler.headers.get('Accept', ''))


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_FORM_NAME = re.compile(rb'content-disposition:[^\r\n]*?\bname="([^"]*)"', re.IGNORECASE)


def _parse_form(content_type, raw):
    """{field: bytes} of a multipart/form-data body (the files API's file data), else None: each
    part between the boundary's delimiter lines (RFC 2046 §5.1.1: CRLF "--" boundary), its name
    from its Content-Disposition (RFC 7578 §4.2), its data as sent (HTTP knows no transfer encoding
    of a part)."""
    if not content_type.lower().startswith('multipart/form-data'):
        return None
    boundary = _BOUNDARY.search(content_type)
    if not boundary:
        return {}
    delimiter = b'--' + boundary[1].encode()
    form = {}
    for part in (b'\r\n' + raw).split(b'\r\n' + delimiter)[1:]:
        if part.startswith(b'--'):
            break       # the close delimiter
        head, _, data = part.partition(b'\r\n\r\n')
        name = _FORM_NAME.search(head)
        if name:
            form[name[1].decode()] = data
    return form


def _query_string(items):
    return '?' + urllib.parse.urlencode(items, quote_via=urllib.parse.quote) if items else ''


def _strip_links(node, top=True):
    """With `Accept: application/json` only the pagination `next` link survives (ref §0)."""
    if isinstance(node, list):
        return [_strip_links(item, False) for item in node]
    if not isinstance(node, dict):
        return node
    kept = {k: _strip_links(v, False) for k, v in node.items() if k != '_links'}
    if top and 'next' in node.get('_links', {}):
        kept['_links'] = {'next': node['_links']['next']}
    return kept


def _send(handler, reply):
    accept = handler.headers.get('Accept', '')
    body = reply.body
    content_type = 'application/hal+json'
    if isinstance(body, bytes):
        data, content_type = body, reply.headers.pop('Content-Type', 'text/html')
    else:
        if 'application/json' in accept and 'hal+json' not in accept:
            body, content_type = _strip_links(body), 'application/json'
        data = json.dumps(body).encode()
    # One write, head and body: as two, the client wakes for the head and waits again for the body.
    head = [f'{handler.protocol_version} {reply.status} {handler.responses.get(reply.status, ("",))[0]}',
            f'Server: {handler.version_string()}', f'Date: {_http_date(int(time.time()))}',
            *(f'{name}: {value}' for name, value in reply.headers.items()),
            f'Content-Type: {content_type}', f'Content-Length: {len(data)}', '', '']
    handler.wfile.write('\r\n'.join(head).encode('latin-1') + data)


@functools.lru_cache(maxsize=2)
def _http_date(second):
    return email.utils.formatdate(second, usegmt=True)


def _reset_connection(handler):
    """Close with SO_LINGER 0, so the client sees a connection reset, not an answer."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    handler.close_connection = True


class _Headers(dict):
    """A request's headers by lower-case name: get() as email.message.Message's, any case."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'   # keep-alive, as clients pool connections
    server_version = 'ontap-emulator'
    timeout = 30                    # idle keep-alive connections end eventually

    def _dispatch(self):
        self.server.emulator._serve(self)

    def parse_request(self):
        """http.server's, for the HTTP/1.1 its clients send, with the headers read into a dict by
        lower-case name instead of through the email parser: that parser cost a third of the
        emulator's time per request, which the benchmark's machine shares with the tool."""
        self.command, self.close_connection = None, True
        words = self.raw_requestline.decode('iso-8859-1').rstrip('\r\n').split(' ')
        if len(words) != 3 or words[2] not in ('HTTP/1.0', 'HTTP/1.1'):
            self.request_version = self.default_request_version
            self.send_error(400, f'Bad request line {self.raw_requestline[:80]!r}')
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        while True:
            line = self.rfile.readline(65537)
            if line in (b'\r\n', b'\n', b''):
                break
            name, colon, value = line.decode('iso-8859-1').partition(':')
            if not colon or len(headers) >= 100:
                self.send_error(400, 'Bad header line')
                return False
            headers[name.strip().lower()] = value.strip()
        self.headers = headers
        connection = headers.get('Connection', '').lower()
        self.close_connection = connection == 'close' or (self.request_version == 'HTTP/1.0'
                                                           and connection != 'keep-alive')
        return True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def log_message(self, *args):
        """Quiet: emu.requests is the log."""


class _TLSServer(ThreadingHTTPServer):
    """TLS per connection in the connection's own thread (a slow handshake blocks no one)."""
    daemon_threads = True
    block_on_close = False   # stop() cuts connections instead of waiting for them

    def __init__(self, emulator, context):
        self.emulator, self.context = emulator, context
        self.connections, self.connections_lock = set(), threading.Lock()
        super().__init__(('127.0.0.1', 0), _Handler)

    def finish_request(self, request, client_address):
        # Headers and body go out as separate writes; without NODELAY each answer
        # can wait for the client's delayed ACK (~40 ms).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request.settimeout(10)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self.connections_lock:
            self.connections.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, ValueError):
            pass   # the client went away, or stop() cut the connection
        finally:
            with self.connections_lock:
                self.connections.discard(conn)
            conn.close()

    def close_connections(self):
        with self.connections_lock:
            for conn in self.connections:
                try:
                    # socket.socket's shutdown, not SSLSocket's: that one would
                    # drop the TLS state under a thread still reading.
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
                except OSError:
                    pass
