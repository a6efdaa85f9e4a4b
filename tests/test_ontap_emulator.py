"""The ONTAP emulator, driven by NetApp's own client (netapp_ontap) and by plain requests.

The official client is the closest thing to a real ONTAP we can run against: if it
finds, creates, polls and fails the way it does against a cluster, the emulator's
shapes are right. Plain `requests` covers what that client never sends (pages,
return_timeout, expensive fields, encoded file paths, faults). Every test checks the
resulting state — bytes on disk, snapshot dicts — not just the answers.
"""

import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import trustme
from netapp_ontap import HostConnection
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import Cluster, FileClone, FileInfo, Job, LicensePackage, Snapshot, Volume
from ontap_emulator import NEWEST_RELEASE, OLDEST_RELEASE, RELEASES, OntapEmulator

PASSWORD = 'netapp1!'
SNAP = 'proxmox_snapshot_2024-03-13_14:42:47+0000'
DISK = 'images/100/vm-100-disk-0.raw'


@pytest.fixture(scope='module')
def ca():
    return trustme.CA()


@pytest.fixture
def emu(tmp_path, ca):
    """A cluster with svm1/proxmox_storage01 holding one VM disk."""
    emulator = OntapEmulator(tmp_path / 'ontap', password=PASSWORD, ca=ca).start()
    vol = emulator.add_volume('proxmox_storage01')
    (vol.path / 'images' / '100').mkdir(parents=True)
    (vol.path / DISK).write_bytes(b'disk-0 original')
    yield emulator
    emulator.stop()


@pytest.fixture
def vol(emu):
    return emu.volume('proxmox_storage01')


def official_client(emu, monkeypatch, password=PASSWORD):
    """The official client, trusting the emulator's CA and polling jobs quickly."""
    # REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE would override its `verify` (ref pitfall 11).
    monkeypatch.delenv('REQUESTS_CA_BUNDLE', raising=False)
    monkeypatch.delenv('CURL_CA_BUNDLE', raising=False)
    return HostConnection('127.0.0.1', port=emu.port, username='admin', password=password,
                          verify=emu.cafile, poll_interval=0.01, poll_timeout=5)


@pytest.fixture
def conn(emu, monkeypatch):
    with official_client(emu, monkeypatch) as connection:
        yield connection


@pytest.fixture
def http(emu):
    """A requests session for what the official client does not send."""
    session = requests.Session()
    session.trust_env = False
    session.auth = ('admin', PASSWORD)
    session.verify = emu.cafile
    yield session
    session.close()


def wait_for_job(http, emu, reply):
    """Poll a job until it ends, as a port would; return its final record."""
    job_url = f'{emu.url}/api/cluster/jobs/{reply.json()["job"]["uuid"]}'
    for _ in range(500):
        job = http.get(job_url, params={'fields': 'state,message,code'}).json()
        if job['state'] in ('success', 'failure'):
            return job
    raise AssertionError(f'job still {job["state"]}')


# ---------------------------------------------------------------- through the official client

def test_find_volume_by_name_and_svm_sees_its_junction(emu, vol, conn):
    emu.add_volume('proxmox_storage01', svm='svm2', junction='/elsewhere')

    found = Volume.find(name='proxmox_storage01', **{'svm.name': 'svm1'},
                        fields='nas.path,space.used,clone.is_flexclone')

    assert found.uuid == vol.uuid
    assert found.nas.path == '/proxmox_storage01'
    assert found.space.used == len(b'disk-0 original')
    assert found.clone.is_flexclone is False


def test_snapshot_create_list_delete(emu, vol, conn):
    emu.add_snapshot('proxmox_storage01', 'hourly.0')

    snapshot = Snapshot(vol.uuid, name=SNAP, comment='Snapshot of Proxmox storage ONTAP01')
    snapshot.post(hydrate=True)

    assert snapshot.uuid == vol.snapshots[SNAP].uuid
    assert vol.snapshots[SNAP].comment == 'Snapshot of Proxmox storage ONTAP01'
    assert (vol.snapshot_path(SNAP) / DISK).read_bytes() == b'disk-0 original'
    listed = Snapshot.get_collection(vol.uuid, name='proxmox_snapshot_*', fields='create_time')
    assert [s.name for s in listed] == [SNAP]

    Snapshot(vol.uuid, uuid=snapshot.uuid).delete()

    assert list(vol.snapshots) == ['hourly.0']
    assert not (vol.snapdir / SNAP).exists()


def test_query_based_delete_removes_only_the_snapshots_it_names(emu, vol, conn):
    emu.job_delay = 0.01   # so the client gets 202 and polls every job in `jobs`
    for name in ('hourly.0', SNAP, 'proxmox_snapshot_2024-03-14_10:00:00+0000'):
        emu.add_snapshot('proxmox_storage01', name)

    Snapshot.delete_collection(vol.uuid, name=SNAP)

    assert list(vol.snapshots) == ['hourly.0', 'proxmox_snapshot_2024-03-14_10:00:00+0000']
    assert not (vol.snapdir / SNAP).exists()
    Snapshot.delete_collection(vol.uuid, name='proxmox_snapshot_*')
    assert list(vol.snapshots) == ['hourly.0']


def test_file_clone_copies_bytes_also_from_a_snapshot(emu, vol, conn):
    emu.add_snapshot('proxmox_storage01', 'before')
    (vol.path / DISK).write_bytes(b'disk-0 changed')

    FileClone.from_dict({'volume': {'uuid': vol.uuid, 'name': vol.name}, 'source_path': DISK,
                         'destination_path': 'images/100/now.raw'}).post()
    FileClone.from_dict({'volume': {'uuid': vol.uuid}, 'source_path': f'.snapshot/before/{DISK}',
                         'destination_path': 'images/100/then.raw'}).post()

    assert (vol.path / 'images/100/now.raw').read_bytes() == b'disk-0 changed'
    assert (vol.path / 'images/100/then.raw').read_bytes() == b'disk-0 original'


def test_a_snapshot_stays_busy_after_a_clone_from_it_when_asked(emu, vol, conn):
    snap = emu.add_snapshot('proxmox_storage01', 'capture')
    made = []
    emu.on_clone = lambda volume, source, destination: made.append((volume.name, source, destination))
    emu.busy_after_clone = 60

    FileClone.from_dict({'volume': {'uuid': vol.uuid}, 'source_path': f'.snapshot/capture/{DISK}',
                         'destination_path': 'images/100/then.raw'}).post()

    assert made == [('proxmox_storage01', f'.snapshot/capture/{DISK}', 'images/100/then.raw')]
    with pytest.raises(NetAppRestError, match='has not expired or is locked'):
        Snapshot(vol.uuid, uuid=snap.uuid).delete()
    renamed = Snapshot(vol.uuid, uuid=snap.uuid)
    renamed.name = 'renamed while busy'
    renamed.patch()
    assert list(vol.snapshots) == ['renamed while busy']
    commented = Snapshot(vol.uuid, uuid=snap.uuid)
    commented.comment = 'Snapshot of Proxmox storage ONTAP01; held'
    commented.patch()
    assert vol.snapshots['renamed while busy'].comment == 'Snapshot of Proxmox storage ONTAP01; held'
    commented.comment = 'x' * 256
    with pytest.raises(NetAppRestError, match='Invalid value'):
        commented.patch()
    snap.busy_until = 0     # the while has passed
    Snapshot(vol.uuid, uuid=snap.uuid).delete()
    assert vol.snapshots == {}


def test_file_clone_onto_an_existing_file_fails_the_job(emu, vol, conn):
    (vol.path / 'images/100/taken.raw').write_bytes(b'keep me')

    with pytest.raises(NetAppRestError, match='already exists'):
        FileClone.from_dict({'volume': {'uuid': vol.uuid}, 'source_path': DISK,
                             'destination_path': 'images/100/taken.raw'}).post()

    assert (vol.path / 'images/100/taken.raw').read_bytes() == b'keep me'


def test_flexclone_keeps_its_snapshot_busy_until_deleted(emu, vol, conn):
    snap = emu.add_snapshot('proxmox_storage01', SNAP)

    clone = Volume.from_dict({
        'name': 'proxmox_storage01_clone', 'svm': {'name': 'svm1'},
        'clone': {'is_flexclone': True, 'parent_volume': {'name': 'proxmox_storage01'},
                  'parent_snapshot': {'name': SNAP}},
        'nas': {'path': '/proxmox_storage01_clone'}})
    clone.post(hydrate=True)

    emu_clone = emu.volume('proxmox_storage01_clone')
    assert clone.uuid == emu_clone.uuid
    assert (emu_clone.is_flexclone, emu_clone.parent_volume, emu_clone.parent_snapshot) == (True, vol, SNAP)
    assert emu_clone.junction == '/proxmox_storage01_clone'
    assert (emu_clone.path / DISK).read_bytes() == b'disk-0 original'
    assert snap.owners

    with pytest.raises(NetAppRestError, match='has not expired or is locked'):
        Snapshot(vol.uuid, uuid=snap.uuid).delete()
    with pytest.raises(NetAppRestError, match='FlexClone'):
        Volume(uuid=vol.uuid).delete()
    assert SNAP in vol.snapshots and emu.volume('proxmox_storage01') is vol

    Volume(uuid=clone.uuid).delete(force=True)   # what the original script sends
    assert snap.owners == []
    assert not emu_clone.path.exists()
    Snapshot(vol.uuid, uuid=snap.uuid).delete()
    assert vol.snapshots == {}


def test_restore_brings_bytes_back_and_drops_newer_snapshots(emu, vol, conn):
    emu.add_snapshot('proxmox_storage01', 'first', create_time='2024-03-13T10:00:00+00:00')
    emu.add_snapshot('proxmox_storage01', 'restore_point', create_time='2024-03-13T11:00:00+00:00')
    (vol.path / DISK).write_bytes(b'disk-0 after')
    (vol.path / 'images/100/new.raw').write_bytes(b'new')
    emu.add_snapshot('proxmox_storage01', 'newer', create_time='2024-03-13T12:00:00+00:00')

    Volume(uuid=vol.uuid).patch(**{'restore_to.snapshot.name': 'restore_point'})

    assert (vol.path / DISK).read_bytes() == b'disk-0 original'
    assert not (vol.path / 'images/100/new.raw').exists()
    assert list(vol.snapshots) == ['first', 'restore_point']
    assert emu.requests[0]['query'] == {'restore_to.snapshot.name': 'restore_point'}


def test_files_api_lists_a_directory(emu, vol, conn):
    (vol.path / 'images/100/vm-100-disk-1.qcow2').write_bytes(b'12345')

    listing = list(FileInfo.get_collection(vol.uuid, 'images/100', fields='size'))

    sizes = {f.name: f.size for f in listing if f.type == 'file'}
    assert sizes == {'vm-100-disk-0.raw': len(b'disk-0 original'), 'vm-100-disk-1.qcow2': 5}
    assert {f.name for f in listing if f.type == 'directory'} == {'.', '..'}


def test_a_failing_job_is_an_error_for_the_client(emu, vol, conn):
    emu.fail_job('POST', r'/snapshots$', code=524479, message='Volume is out of space.')

    with pytest.raises(NetAppRestError, match='Volume is out of space'):
        Snapshot(vol.uuid, name=SNAP).post()

    assert vol.snapshots == {}
    job = [r for r in emu.requests if r['path'].startswith('/api/cluster/jobs/')][-1]
    assert job['status'] == 200


def test_wrong_password_is_refused(emu, monkeypatch):
    with official_client(emu, monkeypatch, password='wrong'), pytest.raises(NetAppRestError) as failure:
        list(Volume.get_collection())
    assert failure.value.status_code == 401


# ---------------------------------------------------------------- releases, through the official client

@pytest.mark.parametrize('release, version', [
    ('9.8', (9, 8, 0)), ('9.10.1', (9, 10, 1)), ('9.14.1', (9, 14, 1)), ('9.18.1', (9, 18, 1)),
    (NEWEST_RELEASE, (9, 19, 1))])
def test_the_cluster_reports_the_release_it_plays(emu, conn, release, version):
    emu.release = release

    cluster = Cluster()
    cluster.get(fields='version')

    assert (cluster.version.generation, cluster.version.major, cluster.version.minor) == version
    assert cluster.version.full.startswith(f'NetApp Release {release}:')


@pytest.mark.parametrize('release', RELEASES)
def test_a_snapshot_has_a_size_from_9_9_on(emu, vol, conn, release):
    emu.release = release
    emu.add_snapshot('proxmox_storage01', SNAP)
    knows_size = release != OLDEST_RELEASE

    everything = list(Snapshot.get_collection(vol.uuid, fields='*'))
    if knows_size:
        sized = list(Snapshot.get_collection(vol.uuid, fields='create_time,size'))
        assert [s.size for s in sized] == [len(b'disk-0 original')]
    else:
        with pytest.raises(NetAppRestError) as refused:
            list(Snapshot.get_collection(vol.uuid, fields='create_time,size'))
        error = refused.value.http_err_response.http_response.json()['error']
        assert refused.value.status_code == 400
        # ONTAP's words (NetApp/harvest#3639, netapp.ontap#189)
        assert error == {'code': '262197', 'target': 'fields',
                         'message': 'The value "size" is invalid for field "fields" (<field,...>)'}

    assert [hasattr(s, 'size') for s in everything] == [knows_size]
    assert [s.name for s in everything] == [SNAP]


def test_a_9_8_job_has_state_message_and_code_but_no_error(emu, vol, conn):
    emu.release = OLDEST_RELEASE
    emu.fail_job('POST', r'/snapshots$', code=524479, message='Volume is out of space.')
    emu.job_delay = 0.01
    with pytest.raises(NetAppRestError, match='Volume is out of space'):
        Snapshot(vol.uuid, name=SNAP).post()
    uuid = [r['path'] for r in emu.requests if r['path'].startswith('/api/cluster/jobs/')][-1].rpartition('/')[2]

    job = Job(uuid=uuid)
    job.get(fields='state,message,code')
    with pytest.raises(NetAppRestError) as refused:
        Job(uuid=uuid).get(fields='state,error')
    emu.release = NEWEST_RELEASE
    newer = Job(uuid=uuid)
    newer.get(fields='error')

    assert (job.state, job.message, job.code) == ('failure', 'Volume is out of space.', 524479)
    assert refused.value.status_code == 400 and '"error" is invalid for field "fields"' in str(refused.value)
    assert (newer.error.code, newer.error.message) == ('524479', 'Volume is out of space.')
    assert vol.snapshots == {}


@pytest.mark.parametrize('release, known', [('9.9.1', {'space.percent_used'}),
                                            ('9.10.1', {'space.percent_used', 'snapshot_count'})])
def test_volume_fields_arrive_with_their_release(emu, vol, conn, release, known):
    emu.release = release

    for field in ('space.percent_used', 'snapshot_count'):
        if field in known:
            assert Volume.find(name=vol.name, fields=field) is not None
        else:
            with pytest.raises(NetAppRestError, match=f'"{field}" is invalid for field "fields"'):
                Volume.find(name=vol.name, fields=field)


# ---------------------------------------------------------------- with plain requests

def test_an_unknown_filter_or_parameter_is_an_unexpected_argument(emu, vol, http):
    emu.release = OLDEST_RELEASE
    emu.add_snapshot('proxmox_storage01', SNAP)
    clone = emu.add_volume('scratch')

    as_filter = http.get(f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots', params={'size': '>0'})
    emu.release = '9.10.1'
    force = http.delete(f'{emu.url}/api/storage/volumes/{clone.uuid}', params={'force': 'true'})
    emu.release = '9.14.1'
    forced = http.delete(f'{emu.url}/api/storage/volumes/{clone.uuid}', params={'force': 'true',
                                                                                'return_timeout': 5})

    # ONTAP's words for an unknown query parameter (NetApp/harvest#2534)
    assert (as_filter.status_code, as_filter.json()['error']) == (400, {
        'code': '262179', 'message': 'Unexpected argument "size".', 'target': 'size'})
    assert (force.status_code, force.json()['error']['code']) == (400, '262179')
    assert forced.status_code == 200 and emu.volume('scratch') is None



def test_parallel_clones_all_land(emu, vol, http):
    emu.job_delay = 0.01

    def clone(n):
        reply = http.post(f'{emu.url}/api/storage/file/clone', params={'return_timeout': 30}, json={
            'volume': {'uuid': vol.uuid}, 'source_path': DISK, 'destination_path': f'images/100/c{n}.raw'})
        return reply.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(clone, range(16)))

    assert statuses == [200] * 16
    assert all((vol.path / f'images/100/c{n}.raw').read_bytes() == b'disk-0 original' for n in range(16))
    assert sorted(r['seq'] for r in emu.requests) == list(range(1, 17))


def test_pages_follow_the_next_link_verbatim(emu, http):
    for n in range(4):
        emu.add_volume(f'extra_{n}')
    emu.page_size = 2

    names, url = [], f'{emu.url}/api/storage/volumes?fields=name&order_by=name%20desc'
    while url:
        body = http.get(url).json()
        assert body['num_records'] <= 2
        names += [r['name'] for r in body['records']]
        url = emu.url + body['_links']['next']['href'] if 'next' in body['_links'] else None

    assert names == ['proxmox_storage01', 'extra_3', 'extra_2', 'extra_1', 'extra_0']
    counted = http.get(f'{emu.url}/api/storage/volumes', params={'return_records': 'false',
                                                                  'max_records': 1}).json()
    assert 'records' not in counted and counted['num_records'] == 1


def test_return_timeout_waits_for_the_job(emu, vol, http):
    emu.job_delay = 0.05
    body = {'volume': {'uuid': vol.uuid}, 'source_path': DISK}

    quick = http.post(f'{emu.url}/api/storage/file/clone', params={'return_timeout': 30},
                      json={**body, 'destination_path': 'images/100/quick.raw'})
    assert quick.status_code == 200 and 'uuid' in quick.json()['job']
    assert (vol.path / 'images/100/quick.raw').exists()

    accepted = http.post(f'{emu.url}/api/storage/file/clone',
                         json={**body, 'destination_path': 'images/100/later.raw'})
    assert accepted.status_code == 202
    assert wait_for_job(http, emu, accepted)['state'] == 'success'
    assert (vol.path / 'images/100/later.raw').read_bytes() == b'disk-0 original'

    too_long = http.post(f'{emu.url}/api/storage/file/clone', params={'return_timeout': 121},
                         json={**body, 'destination_path': 'images/100/never.raw'})
    assert too_long.status_code == 400 and too_long.json()['error']['code'] == '262197'


def test_return_timeout_answers_a_failed_job_with_its_error(emu, vol, http):
    body = {'volume': {'uuid': vol.uuid}, 'source_path': DISK, 'destination_path': DISK}

    failed = http.post(f'{emu.url}/api/storage/file/clone', params={'return_timeout': 30}, json=body)

    # only a job that *succeeds* in time is a 200 (NetApp: "Asynchronous processing")
    assert failed.status_code == 400
    assert failed.json()['error']['code'] == '13565952'
    assert 'already exists' in failed.json()['error']['message']


def test_query_based_delete_answers_like_one_job(emu, vol, http):
    snap = emu.add_snapshot('proxmox_storage01', SNAP)
    emu.add_snapshot('proxmox_storage01', 'hourly.0')
    url = f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots'
    snap.owners = ['volume clone']

    busy = http.delete(url, params={'name': SNAP, 'return_timeout': 30})
    none = http.delete(url, params={'name': 'nothing', 'return_timeout': 30})
    unknown = http.delete(url, params={'colour': 'blue', 'return_timeout': 30})
    assert (busy.status_code, busy.json()['error']['code']) == (400, '1638555')
    assert (none.status_code, none.json()['num_records'], none.json()['jobs']) == (200, 0, [])
    assert unknown.status_code == 400
    assert sorted(vol.snapshots) == ['hourly.0', SNAP]

    snap.owners = []
    done = http.delete(url, params={'name': SNAP, 'return_timeout': 30})
    assert (done.status_code, done.json()['num_records'], len(done.json()['jobs'])) == (200, 1, 1)
    assert list(vol.snapshots) == ['hourly.0']


def test_expensive_fields_come_only_when_named(emu, vol, http):
    emu.add_snapshot('proxmox_storage01', SNAP)
    create = http.post(f'{emu.url}/api/storage/volumes', params={'return_timeout': 30}, json={
        'name': 'clone1', 'svm.name': 'svm1', 'clone.is_flexclone': True,
        'clone.parent_volume.name': vol.name, 'clone.parent_snapshot.name': SNAP})
    assert create.status_code == 201
    assert create.headers['Location'] == '/api/storage/volumes/?name=clone1'
    url = f'{emu.url}/api/storage/volumes'

    everything = http.get(url, params={'name': 'clone1', 'fields': '*'}).json()['records'][0]
    named = http.get(url, params={'clone.parent_snapshot.name': SNAP,
                                  'fields': 'nas.path,clone.parent_snapshot.name'}).json()['records']
    instance = http.get(f'{url}/{vol.uuid}').json()

    assert everything['clone'] == {'is_flexclone': True, 'has_flexclone': False, 'split_initiated': False}
    assert 'nas' in everything and 'path' not in everything['nas']
    assert [(r['name'], r['clone']['parent_snapshot']['name']) for r in named] == [('clone1', SNAP)]
    assert 'nas' not in named[0]   # the clone is not mounted
    assert 'path' not in instance['nas']
    assert http.get(url, params={'fields': 'nas.path'}).json()['records'][0]['nas']['path'] == '/proxmox_storage01'
    unknown = http.get(url, params={'fields': 'nas.colour'})
    assert (unknown.status_code, unknown.json()['error']['code']) == (400, '262197')


def test_file_paths_with_colon_and_plus_are_one_encoded_segment(emu, vol, http):
    name = f'images/100/vm-100-disk-0-{SNAP}.raw'
    (vol.path / name).write_bytes(b'stamped')
    url = f'{emu.url}/api/storage/volumes/{vol.uuid}/files/{urllib.parse.quote(name, safe="")}'
    assert '%3A' in url and '%2B' in url

    meta = http.get(url, params={'return_metadata': 'true', 'fields': 'size'}).json()['records']
    assert [(r['path'], r['size']) for r in meta] == [(name, len(b'stamped'))]

    assert http.delete(url).status_code == 200
    assert not (vol.path / name).exists()
    missing = http.delete(url)
    assert (missing.status_code, missing.json()['error']['code']) == (404, '6684674')


def test_paths_leaving_the_volume_are_refused(emu, vol, http, tmp_path):
    (tmp_path / 'outside').write_bytes(b'secret')
    files = f'{emu.url}/api/storage/volumes/{vol.uuid}/files/'

    escapes = [http.get(files + '%2E%2E%2F%2E%2E%2F%2E%2E'),
               http.delete(files + urllib.parse.quote('images/../../../../outside', safe='')),
               http.post(f'{emu.url}/api/storage/file/clone', json={
                   'volume': {'uuid': vol.uuid}, 'source_path': '../../../outside',
                   'destination_path': 'images/100/stolen.raw'})]
    absolute = http.post(f'{emu.url}/api/storage/file/clone', json={
        'volume': {'uuid': vol.uuid}, 'source_path': f'/{DISK}', 'destination_path': 'images/100/x.raw'})

    assert [r.status_code for r in escapes] == [400, 400, 400]
    assert (absolute.status_code, absolute.json()['error']['code']) == (400, '917812')
    assert (tmp_path / 'outside').read_bytes() == b'secret'
    assert sorted(p.name for p in (vol.path / 'images/100').iterdir()) == ['vm-100-disk-0.raw']


def test_drop_resets_the_connection_once(emu, http):
    emu.drop('GET', r'^/api/cluster$')

    with pytest.raises(requests.ConnectionError):
        http.get(f'{emu.url}/api/cluster')
    cluster = http.get(f'{emu.url}/api/cluster', params={'fields': 'version'}).json()

    assert cluster['version']['major'] == 19 and cluster['name'] == 'cluster-a'
    assert [r['status'] for r in emu.requests] == [None, 200]


def test_injected_errors_use_the_envelope_and_run_out(emu, vol, http):
    emu.fail('DELETE', r'/snapshots/', status=503, code='7', message='Too busy.', times=None)
    snap = emu.add_snapshot('proxmox_storage01', SNAP)
    url = f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots/{snap.uuid}'

    answers = [http.delete(url) for _ in range(2)]

    assert [(a.status_code, a.json()) for a in answers] == [
        (503, {'error': {'message': 'Too busy.', 'code': '7'}})] * 2
    assert SNAP in vol.snapshots


def test_requests_are_logged_and_announced(emu, vol, http):
    seen = []
    emu.on_request = lambda record: seen.append((record['seq'], record['status'], record['path']))

    http.post(f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots', params={'return_timeout': 30},
              json={'name': SNAP, 'comment': 'c'})
    http.get(f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots', params={'name': 'proxmox_*'})

    first, second = emu.requests
    assert seen == [(1, None, first['path']), (2, None, second['path'])]
    assert (first['method'], first['body'], first['status']) == ('POST', {'name': SNAP, 'comment': 'c'}, 201)
    assert (second['query'], second['body'], second['status']) == ({'name': 'proxmox_*'}, None, 200)
    assert first['time'] <= second['time']


def test_private_cli_restore_in_both_forms(emu, vol, http):
    emu.add_snapshot('proxmox_storage01', SNAP)
    url = f'{emu.url}/api/private/cli/volume/snapshot/restore'
    params = {'vserver': 'svm1', 'volume': vol.name, 'snapshot': SNAP}

    (vol.path / DISK).write_bytes(b'lost 1')
    assert http.post(url, json={**params, 'force': True}).status_code == 200
    assert (vol.path / DISK).read_bytes() == b'disk-0 original'
    (vol.path / DISK).write_bytes(b'lost 2')
    patched = http.patch(url, params={**params, 'force': 'True', 'privilege_level': 'admin'})
    assert patched.status_code == 200
    assert (vol.path / DISK).read_bytes() == b'disk-0 original'
    missing = http.post(url, json={**params, 'snapshot': 'nope'})
    assert (missing.status_code, missing.json()['error']['code']) == (404, '4')


def test_json_accept_header_drops_job_links(emu, vol, http):
    reply = http.post(f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots', json={'name': SNAP},
                      headers={'Accept': 'application/json'})

    assert reply.status_code == 202
    assert set(reply.json()['job']) == {'uuid'}   # poll by uuid (ref pitfall 2)


def test_client_certificate_authenticates_its_common_name(emu, http):
    certfile, keyfile = emu.cert_user('automation')
    url = f'{emu.url}/api/svm/svms'

    with requests.Session() as session:
        session.trust_env, session.verify = False, emu.cafile
        with_cert = session.get(url, params={'fields': 'state'}, cert=(certfile, keyfile))
    without = requests.get(url, verify=emu.cafile)

    assert with_cert.status_code == 200
    assert [(r['name'], r['state']) for r in with_cert.json()['records']] == [('svm1', 'running')]
    assert without.status_code == 401


def test_a_file_delete_as_a_job_is_followed_by_the_official_client(emu, vol, conn):
    # The reference lists 200 and 202 + job for DELETE …/files/{path} (ref §13); the client
    # polls the job when it gets one.
    emu.file_delete_jobs = True
    emu.slow_job('DELETE', '/files/', 0.2)

    FileInfo(vol.uuid, DISK).delete()

    assert not (vol.path / DISK).exists()
    assert [r['status'] for r in emu.requests if r['method'] == 'DELETE'] == [202]


def test_a_lost_answer_still_carries_out_the_call(emu, vol, http):
    emu.lose_answer('POST', '/api/storage/file/clone')
    body = {'volume': {'uuid': vol.uuid}, 'source_path': DISK, 'destination_path': DISK + '.copy'}

    with pytest.raises(requests.ConnectionError):
        http.post(f'{emu.url}/api/storage/file/clone', json=body, params={'return_timeout': 5})
    emu.wait_for_jobs()

    assert (vol.path / (DISK + '.copy')).read_bytes() == b'disk-0 original'
    running = http.get(f'{emu.url}/api/cluster/jobs', params={
        'description': 'POST /api/storage/file/clone', 'state': 'queued|running|paused'}).json()
    assert running['num_records'] == 0


def test_a_gateway_page_is_no_json_and_the_call_was_carried_out(emu, vol, http):
    emu.lose_answer('POST', r'/snapshots$', status=504)

    reply = http.post(f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots', json={'name': SNAP},
                      params={'return_timeout': 5})
    emu.wait_for_jobs()

    assert reply.status_code == 504 and reply.headers['Content-Type'] == 'text/html'
    assert SNAP in vol.snapshots


@pytest.mark.parametrize('shape', ['jobs', 'job', 'bare'])
def test_query_based_delete_answer_shapes(emu, vol, http, shape):
    # None of the shapes is confirmed (ref §13): the swagger models {job, num_records},
    # NetApp's client reads `jobs`; the tool must survive each.
    emu.collection_delete_answer = shape
    emu.add_snapshot('proxmox_storage01', SNAP)

    reply = http.delete(f'{emu.url}/api/storage/volumes/{vol.uuid}/snapshots', params={'name': SNAP,
                                                                                      'return_timeout': 5})

    assert reply.status_code == 200 and SNAP not in vol.snapshots
    assert {'jobs': {'num_records', 'jobs'}, 'job': {'num_records', 'job'}, 'bare': set()}[shape] == set(reply.json())


def test_the_official_client_writes_a_new_file_as_multipart_data(emu, vol, conn):
    # What doctor -try does: POST …/files/{path} with the data as a form field (9.8+).
    FileInfo(vol.uuid, 'images/100/notes.txt').post(data='written by the client')

    assert (vol.path / 'images/100/notes.txt').read_bytes() == b'written by the client'
    with pytest.raises(NetAppRestError):    # overwrite defaults to false
        FileInfo(vol.uuid, 'images/100/notes.txt').post(data='again')
    assert (vol.path / 'images/100/notes.txt').read_bytes() == b'written by the client'


def test_a_volumes_space_is_counted_wherever_a_get_may_answer_or_match_it(emu, vol, http):
    # The emulator walks a volume's files only for such a GET: an instance GET without `fields`
    # (every field but the expensive ones), `space` among the fields, or a filter on it.
    used = len(b'disk-0 original')
    volumes = f'{emu.url}/api/storage/volumes'

    instance = http.get(f'{volumes}/{vol.uuid}').json()
    named = http.get(volumes, params={'name': vol.name, 'fields': 'space'}).json()['records'][0]
    matched = http.get(volumes, params={'space.used': used, 'fields': 'name'}).json()['records']
    unmatched = http.get(volumes, params={'space.used': f'>{used}', 'fields': 'name'}).json()['records']

    assert instance['space']['used'] == named['space']['used'] == used
    assert [record['name'] for record in matched] == [vol.name] and unmatched == []


def test_a_files_path_through_a_link_out_of_the_volume_is_refused(emu, vol, http, tmp_path):
    outside = tmp_path / 'outside'
    (outside / 'deep').mkdir(parents=True)
    (vol.path / 'images' / 'away').symlink_to(outside)
    (vol.path / 'images' / 'here').symlink_to(vol.path / 'images' / '100')
    files = f'{emu.url}/api/storage/volumes/{vol.uuid}/files/'

    through_link = http.get(files + 'images%2Faway%2Fdeep')
    up_and_out = http.get(files + 'images%2F..%2F..%2Fetc')
    within = http.get(files + 'images%2Fhere')

    for refused in (through_link, up_and_out):
        assert refused.status_code == 400 and 'leaves the volume' in refused.json()['error']['message']
    assert within.status_code == 200


def test_a_form_part_keeps_its_bytes_and_the_headers_any_case(emu, vol, http):
    data = b'\r\n--not-the-boundary\r\n\r\n\x00\xff end \r\n'
    reply = http.post(f'{emu.url}/api/storage/volumes/{vol.uuid}/files/images%2F100%2Fraw.bin',
                      files={'data': ('data', data)}, headers={'accept': 'application/json'})

    assert reply.status_code == 201, reply.text
    assert (vol.path / 'images/100/raw.bin').read_bytes() == data
    assert reply.headers['Content-Type'] == 'application/json'


def test_the_official_client_reads_a_files_data_as_multipart(emu, vol, conn):
    # What vm restore does to read a saved config: GET …/files/{path}?byte_offset&length with
    # Accept: multipart/form-data (netapp_ontap resources/file_info.py, "File data"); the
    # client parses such an answer into response_parts.
    conn.session.headers['Accept'] = 'multipart/form-data'
    record = FileInfo(vol.uuid, DISK)
    record.get(byte_offset=0, length=6)

    assert [part['content'] for part in record.response_parts] == [b'disk-0']


def test_the_official_client_lists_a_directory_inside_a_snapshot(emu, vol, conn):
    # What storage list does to count a snapshot's guests (inside .snapshot/: unconfirmed, ref §13).
    Snapshot(vol.uuid, name=SNAP).post()
    (vol.path / 'images/100/notes.txt').write_bytes(b'after the snapshot')

    listed = {f.name for f in FileInfo.get_collection(vol.uuid, f'.snapshot/{SNAP}/images/100')}

    assert 'vm-100-disk-0.raw' in listed and 'notes.txt' not in listed


def test_the_official_client_reads_the_installed_licences(emu, conn):
    def licensed():
        return {package.name: package.state for package in
                LicensePackage.get_collection(fields='name,state', name='flexclone|snaprestore')}

    assert licensed() == {'flexclone': 'compliant', 'snaprestore': 'compliant'}
    del emu.licenses['flexclone']
    assert licensed() == {'snaprestore': 'compliant'}


def test_the_volume_fields_doctor_reads(emu, vol, conn):
    vol.style, vol.snapshot_autodelete = 'flexgroup', True
    volume = Volume(uuid=vol.uuid)
    volume.get(fields='state,style,type,space.snapshot.reserve_percent,space.snapshot.autodelete_enabled,'
                      'snapshot_count,snapshot_policy.name')
    assert (volume.state, volume.style, volume.type, volume.snapshot_count) == ('online', 'flexgroup', 'rw', 0)
    assert (volume.space.snapshot.reserve_percent, volume.space.snapshot.autodelete_enabled) == (5, True)
    assert volume.snapshot_policy.name == 'default'
