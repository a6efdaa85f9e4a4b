"""The main stories on the oldest ONTAP release the tool supports (9.8) and the newest NetApp
documents: each command's happy path and a job that outlasts return_timeout. Both clusters of the
world play the release. On the newest, ONTAP never refuses a field (the tool sends none it does not
know); on 9.8 it refuses the fields that came later (a snapshot's size, a job's error, a volume's
snapshot_count and space.percent_used), and the tool asks again without them, once per run."""


import pytest
from ontap_emulator import NEWEST_RELEASE, OLDEST_RELEASE
from world import destroy_vm, pve_reads_nfs_directories

import pve_ontap_snapshot as tool

VM101_DISK = 'vm-101-disk-0.raw'


@pytest.fixture(params=[OLDEST_RELEASE, NEWEST_RELEASE])
def ontap_release(request):
    return request.param


def refused_fields(emu):
    """Each field ONTAP refused in `fields`, as the tool's next GET of the same path left it out."""
    refused = []
    for n, request in enumerate(emu.requests):
        if request['status'] == 400 and 'fields' in request['query']:
            again = next(r for r in emu.requests[n + 1:] if r['path'] == request['path'])
            refused += set(request['query']['fields'].split(',')) - set(again['query']['fields'].split(','))
    return sorted(refused)


def expect_refused(world, *fields):
    """Cluster A refused exactly these fields on 9.8 (once per run that asked), none on the newest."""
    oldest = world.a.release == OLDEST_RELEASE
    assert refused_fields(world.a) == (sorted(fields) if oldest else [])
    return oldest


def test_a_vm_snapshot_is_made_listed_restored_and_deleted(world):
    disk = world.disk(world.vol1, 101, VM101_DISK)
    original = disk.read_bytes()

    made = world.run('vm', 'create', '-vm', 101)
    (stamp,) = world.vm_stamps(101)
    disk.write_bytes(b'changed since')
    restored = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-yes')
    listed = world.vm_snapshots(101)
    deleted = world.run('vm', 'delete', '-vm', 101, '-snapshot', stamp)

    assert (made.code, restored.code, deleted.code) == (0, 0, 0), made.err + restored.err + deleted.err
    assert disk.read_bytes() == original
    assert [(s['kind'], s['complete']) for s in listed] == [('snapshot', True), ('pre-restore', True)]
    assert world.files(world.vol1, 101) == sorted([VM101_DISK, f'vm-101-disk-0-prerestore-{listed[1]["stamp"]}.raw',
                                                   f'vm-101-prerestore-{listed[1]["stamp"]}.shutdown.manifest.json'])
    expect_refused(world)


def storage_snapshot_of_101_then_changed(world):
    """A storage snapshot of ONTAP01, then VM 101's disk changed: (snapshot, disk bytes in it)."""
    disk = world.disk(world.vol1, 101, VM101_DISK)
    original = disk.read_bytes()
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.storage_snapshots()
    disk.write_bytes(b'changed since')
    return snapshot, original


def test_a_vm_comes_back_from_a_storage_snapshot(world):
    disk = world.disk(world.vol1, 101, VM101_DISK)
    snapshot, original = storage_snapshot_of_101_then_changed(world)

    result = world.run('vm', 'restore', '-vm', 101, '-storage-snapshot', snapshot, '-yes')

    assert result.code == 0, result.err
    assert disk.read_bytes() == original
    # the copy inside the snapshot was looked up through the files API before it was cloned
    assert [r for r in world.ontap_requests(path=f'*/files/.snapshot/{snapshot}/images/101/{VM101_DISK}', on=world.a)
            if r['query'].get('return_metadata') == 'true']
    expect_refused(world, 'size')


def test_a_destroyed_vm_comes_back_as_new_from_the_storage_snapshot_that_recorded_it(world):
    pve_reads_nfs_directories(world)
    original = world.disk(world.vol1, 101, VM101_DISK).read_bytes()
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.storage_snapshots()
    destroy_vm(world, 101, 'pve2')

    result = world.run('vm', 'restore', '-vm', 101, '-storage-snapshot', snapshot, '-as-new', 201)

    assert result.code == 0, result.err
    assert world.disk(world.vol1, 201, 'vm-201-disk-0.raw').read_bytes() == original
    assert world.pve.vm(201).config['scsi0'].startswith('ONTAP01:201/vm-201-disk-0.raw')
    # its record, read back through the files API from inside the snapshot
    assert [r for r in world.ontap_requests(
        'GET', f'*/files/.snapshot/{snapshot}/pve-ontap-snapshot.manifest.json', on=world.a)
            if r['status'] == 200 and 'length' in r['query']]
    # a snapshot's size, refused on 9.8, is still asked of a file, which has one there
    expect_refused(world, 'size')


@pytest.mark.parametrize('path, resource', [
    ('/api/storage/volumes/0deffa35-e480-4941-ad9e-cfcdda6d87e4/snapshots', '/api/storage/volumes/*/snapshots'),
    ('/api/storage/volumes/0deffa35-e480-4941-ad9e-cfcdda6d87e4/files/.snapshot/a/b.json', '/api/storage/volumes/*/files'),
    ('/api/storage/volumes/0deffa35-e480-4941-ad9e-cfcdda6d87e4/files/images', '/api/storage/volumes/*/files'),
    ('https://[::1]:8443/api/cluster/jobs/0deffa35-e480-4941-ad9e-cfcdda6d87e4?fields=state', '/api/cluster/jobs/*'),
    ('/api/storage/volumes', '/api/storage/volumes')])
def test_a_refused_field_is_remembered_for_its_kind_of_resource(path, resource):
    assert tool.Ontap.api_resource(path) == resource


def test_a_vm_snapshot_puts_the_saved_config_back_with_its_disks(world):
    disk = world.disk(world.vol1, 101, VM101_DISK)
    original = disk.read_bytes()
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    (stamp,) = world.vm_stamps(101)
    disk.write_bytes(b'changed since')
    world.pve.vm(101).config['memory'] = 4096

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')

    assert result.code == 0, result.err
    assert disk.read_bytes() == original and str(world.pve.vm(101).config['memory']) == '1024'
    expect_refused(world)


def test_running_vms_share_one_capture_per_volume_and_doctor_try_clears_what_a_run_left(world):
    world.pve.vm(101).status = 'running'
    world.a.add_snapshot('proxmox_storage01', 'pve_ontap_leftover_capture_2024-03-13_14:40:00+0000_vm100',
                         create_time='2024-03-13T14:42:47+00:00')

    made = world.run('vm', 'create', '-vm', 100, 101, '-no-register')
    doctor = world.run('doctor', '-try', '-storage', 'ONTAP01')

    assert made.code == 0, made.err
    assert doctor.code == 0, doctor.out
    captures = {r['body']['name'] for r in world.ontap_requests('POST', '*/snapshots', on=world.a)
                if r['body']['name'].startswith(tool.Names.CAPTURE_PREFIX)}
    assert len(captures) == 1 and captures.pop().endswith('_all')
    assert len(world.clones(world.vol1, 101)) == 1
    assert not [name for name in world.vol1.snapshots if name.startswith('pve_ontap_')]


def test_storage_snapshots_are_made_listed_shown_and_deleted(world):
    created = world.run('storage', 'create', '-storage', 'ONTAP01')
    (name,) = world.storage_snapshots()
    text = world.run('storage', 'list', '-storage', 'ONTAP01')
    listed = world.json('storage', 'list', '-storage', 'ONTAP01')
    shown = world.json('storage', 'show', '-storage', 'ONTAP01')
    deleted = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name)

    assert (created.code, text.code, deleted.code) == (0, 0, 0), created.err + text.err + deleted.err
    assert world.storage_snapshots() == []
    assert [s['name'] for s in listed] == [name]
    assert shown['name'] == 'proxmox_storage01' and shown['nas']['path'] == '/proxmox_storage01'
    # on 9.8: each of the two lists, the delete's look-up of the snapshot (for its hold), and storage show
    if expect_refused(world, 'size', 'size', 'size', 'snapshot_count', 'space.percent_used'):
        # 9.8 has no snapshot size: "-" in text, null in JSON; storage show leaves out what it lacks
        assert text.out.splitlines()[1].split()[2] == '-' and listed[0]['size'] is None
        assert 'snapshot_count' not in shown and 'percent_used' not in shown['space']
    else:
        assert listed[0]['size'] > 0 and shown['snapshot_count'] == 1


def test_a_storage_is_restored_to_a_snapshot(world):
    disk = world.disk(world.vol1, 101, VM101_DISK)
    original = disk.read_bytes()
    world.pve.vm(100).status = 'stopped'
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.storage_snapshots()
    disk.write_bytes(b'changed since')

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', snapshot, '-yes')

    assert result.code == 0, result.err
    assert disk.read_bytes() == original
    expect_refused(world, 'size')


def test_a_snapshot_is_mounted_and_unmounted(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.storage_snapshots()

    mounted = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', snapshot)
    clone = world.a.volume('proxmox_storage01_clone')
    made = (clone.parent_snapshot, world.pve.storage_config('ONTAP01-CLONE')['export'])
    unmounted = world.run('storage', 'unmount', '-storage', 'ONTAP01-CLONE')

    assert (mounted.code, unmounted.code) == (0, 0), mounted.err + unmounted.err
    assert made == (snapshot, '/proxmox_storage01_clone')
    assert world.a.volume('proxmox_storage01_clone') is None and 'ONTAP01-CLONE' not in world.pve.storages
    assert not world.vol1.snapshots[snapshot].owners
    expect_refused(world, 'size')


def test_a_clone_that_outlasts_return_timeout_is_followed_to_its_end(world):
    world.write_config(defaults='read_timeout = 6\n')    # return_timeout = 1 s: the job is polled
    world.a.slow_job('POST', '/api/storage/file/clone', 1.5)

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 0, result.err
    (clone,) = world.clones(world.vol1, 101)
    assert world.disk(world.vol1, 101, clone).read_bytes() == world.disk(world.vol1, 101, VM101_DISK).read_bytes()
    polls = world.ontap_requests(path='/api/cluster/jobs/*', on=world.a)
    assert polls and polls[-1]['status'] == 200
    if expect_refused(world, 'error'):
        # asked once with `error`, refused, then never again in this run
        assert [r['status'] for r in polls].count(400) == 1
        assert all('error' not in r['query']['fields'] for r in polls if r['status'] == 200)


# -- where NetApp's reference says nothing, the tool checks or does not rely on it

@pytest.mark.parametrize('answer', ['not there', 'no such file at another status'])
def test_a_disk_the_storage_snapshot_has_no_copy_of_is_kept_and_named(world, answer):
    """ONTAP's HTTP status for "no such file" (6684674) is not documented: both mean missing."""
    snapshot, original = storage_snapshot_of_101_then_changed(world)
    world.pve.vm(101).config['scsi1'] = 'ONTAP01:101/vm-101-disk-1.raw,size=1G'
    added = world.disk(world.vol1, 101, 'vm-101-disk-1.raw')
    added.write_bytes(b'added after the snapshot')
    if answer != 'not there':
        world.a.fail('GET', r'/files/\.snapshot/.*vm-101-disk-1', status=400, code='6684674',
                     message='No such file or directory.')

    result = world.run('vm', 'restore', '-vm', 101, '-storage-snapshot', snapshot, '-yes')

    assert result.code == 0, result.err
    assert f'storage snapshot {snapshot} has no copy of disk scsi1' in result.err
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == original
    assert added.read_bytes() == b'added after the snapshot'


def test_a_refused_look_up_in_a_storage_snapshot_stops_the_restore_in_ontaps_words(world):
    """Any other answer to the files-API GET below .snapshot is no "missing copy": the restore
    stops before it changes anything, with ONTAP's message."""
    snapshot, _ = storage_snapshot_of_101_then_changed(world)
    world.a.fail('GET', r'/files/\.snapshot/[^/]+/images/', status=403, code='6',
                 message='not authorized for that command')
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 101, '-storage-snapshot', snapshot, '-yes')

    assert result.code == 1
    assert result.err.strip() == (f'ERROR: ONTAP {world.a.host}: look up .snapshot/{snapshot}/images/101/{VM101_DISK} '
                                  'in volume proxmox_storage01: not authorized for that command')
    assert world.state() == before
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == b'changed since'


def test_a_clone_whose_answer_was_lost_and_whose_read_back_is_refused_stays_unknown(world):
    """Neither done nor failed: nothing is taken back over it, and the error says so."""
    world.a.lose_answer('POST', '/api/storage/file/clone')
    world.a.fail('GET', r'/files/images%2F101%2Fvm-101-disk-0-snapshot-|/files/images/101/vm-101-disk-0-snapshot-',
                 status=403, code='6', message='not authorized for that command')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    assert 'still unknown' in result.err and 'finding out what it did failed' in result.err
    (made,) = world.clones(world.vol1, 101)
    assert world.disk(world.vol1, 101, made).read_bytes() == world.disk(world.vol1, 101, VM101_DISK).read_bytes()


@pytest.mark.parametrize('status, code, message, field', [
    (400, '262197', 'The value "size" is invalid for field "fields" (<field,...>)', 'size'),
    (400, '262197', 'The value "error" is invalid for field "fields" (<field,...>)', 'error'),
    (400, '262197', 'Invalid value "121" for field "return_timeout".', None),     # another field's value
    (400, '262179', 'Unexpected argument "size".', None),                           # a filter, not a field
    (500, '262197', 'The value "size" is invalid for field "fields" (<field,...>)', None),
])
def test_only_ontaps_refusal_of_a_field_is_read_as_one(status, code, message, field):
    exc = tool.OntapError(f'ONTAP cluster-a: list snapshots of volume v: {message}', status=status, code=code)
    assert tool.Ontap.unknown_field(exc) == field


@pytest.mark.parametrize('status, code, missing', [
    (404, '6684674', True), (400, '6684674', True), (404, None, True),
    (403, '6', False), (400, '262197', False), (500, '1', False), (None, None, False),
])
def test_only_no_such_file_is_a_missing_file(status, code, missing):
    assert tool.Ontap.missing_file(tool.OntapError('ONTAP cluster-a: look up x in volume v: …', status=status,
                                             code=code)) is missing
