"""vm verify and storage verify prove a snapshot restorable without restoring it: from metadata and
qcow2 headers alone, read-only, in a bounded number of requests. The world's disks are sized as
PVE sizes them (sized_as_pve_sizes_them), as on a real storage, so that a healthy snapshot holds."""

import json
import re

import pytest
from world import OLD_SNAPSHOT, ORIGINAL_STAMP, error_lines, fails_cleanly, sized_as_pve_sizes_them, write_qcow2

import pve_ontap_snapshot as tool


@pytest.fixture
def healthy(world):
    sized_as_pve_sizes_them(world)
    return world


def storage_snapshot(world, storage='ONTAP01'):
    """A storage snapshot (storage create): its name."""
    result = world.run('storage', 'create', '-storage', storage)
    assert result.code == 0, result.err
    return re.search(r'snapshot (\S+) of volume', result.err)[1]


def verify(world, *argv):
    """A verify run's exit code, its lines on stdout, and its one ERROR line (or None)."""
    result = world.run(*argv)
    errors = error_lines(result)
    assert len(errors) <= 1 and 'Traceback' not in result.err, result.err
    return result.code, result.out.splitlines(), errors[0] if errors else None


def verdicts(world, *argv):
    result = world.run('-output', 'json', *argv)
    assert result.code in (0, 1), result.err
    return json.loads(result.out)


def ontap_requests(world):
    return [(r['method'], r['path'].rsplit('/', 1)[-1]) for r in world.ontap_requests()]


@pytest.mark.parametrize('backing', [None, 'snap-before-vm-100-disk-2.qcow2'])
def test_a_qcow2_headers_virtual_size_is_read_beside_its_backing_file(tmp_path, backing):
    head = write_qcow2(tmp_path / 'disk.qcow2', backing=backing, size=3 * 2**30).read_bytes()[:tool.Qcow2.HEADER_READ]

    assert tool.Qcow2.virtual_size(head) == 3 * 2**30
    assert tool.Qcow2.backing(head) == backing


@pytest.mark.parametrize('head', [b'', b'QFI\xfb' + bytes(20), b'\x00' * 4096, b'not a qcow2 file at all' * 10])
def test_a_file_that_is_no_qcow2_has_no_virtual_size(head):
    assert tool.Qcow2.virtual_size(head) is None


@pytest.mark.parametrize('directory, backing, path', [
    ('images/105', '../100/base-100-disk-9.raw', 'images/100/base-100-disk-9.raw'),
    ('images/100', 'snap-x-vm-100-disk-2.qcow2', 'images/100/snap-x-vm-100-disk-2.qcow2'),
    ('.snapshot/s/images/105', '../100/base-100-disk-9.raw', '.snapshot/s/images/100/base-100-disk-9.raw'),
    ('images/100', '/mnt/pve/ONTAP01/images/100/base.raw', None),
    ('images/100', '../../../etc/passwd', None)])
def test_a_backing_files_path_is_taken_from_the_files_directory(directory, backing, path):
    assert tool.Qcow2.backing_path(directory, backing) == path


# -- vm verify

def test_a_healthy_vm_snapshot_verifies_ok_reading_its_listing_manifest_and_qcow2_header_alone(healthy, lock_dir,
                                                                                                   cluster_dir):
    world = healthy
    stamp = world.vm_snapshot(100, '-no-register')
    before = world.state()
    locks = sorted(cluster_dir.rglob('*'))
    world.a.requests.clear()
    world.b.requests.clear()

    code, lines, error = verify(world, 'vm', 'verify', '-vm', 100)

    assert (code, lines, error) == (0, [f'ok   VM 100 {stamp}: 7 files'], None)
    assert world.state() == before and sorted(cluster_dir.rglob('*')) == locks and not lock_dir.exists()
    # per volume its lookup and one listing of images/100; the manifest (on ONTAP01, the first disk's)
    # and the one qcow2 copy's header, one read each; every request a GET
    manifest = f'vm-100-snapshot-{stamp}.running.manifest.json'
    assert sorted(ontap_requests(world)) == sorted([
        ('GET', 'volumes'), ('GET', '100'), ('GET', manifest), ('GET', f'vm-100-disk-2-snapshot-{stamp}.qcow2'),
        ('GET', 'volumes'), ('GET', '100')])
    (header,) = world.ontap_requests(path='*.qcow2', on=world.a)
    assert header['query'] == {'byte_offset': '0', 'length': '4096'}


def test_every_snapshot_of_a_vm_is_verified_pre_restore_ones_too(healthy):
    world = healthy
    world.pve.vm(100).status = 'stopped'
    first = world.vm_snapshot(100, '-no-register')
    second = world.vm_snapshot(100, '-no-register')
    assert world.run('vm', 'restore', '-vm', 100, '-snapshot', first, '-yes').code == 0
    (undo,) = set(world.vm_stamps(100)) - {first, second}

    code, lines, _ = verify(world, 'vm', 'verify', '-vm', 100)
    data = verdicts(world, 'vm', 'verify', '-vm', 100)

    assert code == 0
    assert lines == [f'ok   VM 100 {first}: 7 files', f'ok   VM 100 {second}: 7 files',
                     f'ok   VM 100 {undo} (pre-restore): 7 files']
    assert [(v['kind'], v['stamp']) for v in data] == [('snapshot', first), ('snapshot', second),
                                                       ('pre-restore', undo)]


def test_a_pre_restore_snapshot_of_some_disks_verifies_ok(healthy):
    """A restore from a storage snapshot of ONTAP01 copies only VM 100's disks there first: its
    pre-restore snapshot names just those as copies, and holds."""
    world = healthy
    world.pve.vm(100).status = 'stopped'
    name = storage_snapshot(world)
    assert world.run('vm', 'restore', '-vm', 100, '-storage-snapshot', name, '-yes').code == 0

    (verdict,) = verdicts(world, 'vm', 'verify', '-vm', 100)

    assert (verdict['kind'], verdict['ok'], verdict['files']) == ('pre-restore', True, 5)


def test_a_missing_copy_is_named_by_its_path(healthy):
    world = healthy
    stamp = world.vm_snapshot(100, '-no-register')
    world.disk(world.vol2, 100, f'vm-100-disk-4-snapshot-{stamp}.raw').unlink()

    code, lines, error = verify(world, 'vm', 'verify', '-vm', 100)

    problem = f'images/100/vm-100-disk-4-snapshot-{stamp}.raw on ONTAP02 is missing'
    assert (code, lines, error) == (1, [f'FAIL VM 100 {stamp}: {problem}'], f'ERROR: VM 100 {stamp}: {problem}')


@pytest.mark.parametrize('copy, change, problem', [
    ('vm-100-disk-0-snapshot-{stamp}.raw', lambda path: path.write_bytes(path.read_bytes() + b'more'),
     'images/100/vm-100-disk-0-snapshot-{stamp}.raw on ONTAP01 has 8196 bytes, not the 8192 its manifest records'),
    ('vm-100-disk-2-snapshot-{stamp}.qcow2', lambda path: write_qcow2(path, size=3 * 2**30),
     ('images/100/vm-100-disk-2-snapshot-{stamp}.qcow2 on ONTAP01 has a virtual size of 3221225472 bytes, not the '
      '2147483648 its manifest records')),
    ('vm-100-disk-2-snapshot-{stamp}.qcow2', lambda path: path.write_bytes(b'\0' * 8192),
     'images/100/vm-100-disk-2-snapshot-{stamp}.qcow2 on ONTAP01 has no qcow2 header')])
def test_a_copy_of_another_size_than_recorded_is_named_with_both_sizes(healthy, copy, change, problem):
    world = healthy
    stamp = world.vm_snapshot(100, '-no-register')
    change(world.disk(world.vol1, 100, copy.format(stamp=stamp)))

    code, lines, error = verify(world, 'vm', 'verify', '-vm', 100)

    assert (code, lines) == (1, [f'FAIL VM 100 {stamp}: {problem.format(stamp=stamp)}'])
    assert error == f'ERROR: VM 100 {stamp}: {problem.format(stamp=stamp)}'


def test_a_linked_clone_holds_while_its_base_image_is_there_and_fails_once_it_is_gone(healthy):
    world = healthy
    base = world.disk(world.vol1, 100, 'base-100-disk-9.raw')
    base.write_bytes(b'template')
    write_qcow2(world.disk(world.vol1, 105, 'vm-105-disk-0.qcow2'), backing='../100/base-100-disk-9.raw')
    world.pve.add_vm(105, 'linked', node='pve1', status='stopped',
                     config={'scsi0': 'ONTAP01:100/base-100-disk-9.raw/105/vm-105-disk-0.qcow2,size=1G', 'memory': 512})
    stamp = world.vm_snapshot(105, '-no-register')
    world.a.requests.clear()

    held = verify(world, 'vm', 'verify', '-vm', 105)
    # the base image's directory listed once, beside the VM's own
    assert ontap_requests(world).count(('GET', '100')) == 1
    base.unlink()
    gone = verify(world, 'vm', 'verify', '-vm', 105)

    assert held == (0, [f'ok   VM 105 {stamp}: 2 files'], None)
    assert gone[:2] == (1, [(f'FAIL VM 105 {stamp}: images/105/vm-105-disk-0-snapshot-{stamp}.qcow2 on ONTAP01 stands '
                             'on the base image images/100/base-100-disk-9.raw, which is gone')])


def test_a_qcow2_copy_over_a_pve9_volume_chain_fails_and_a_set_without_manifest_says_so(healthy):
    """A set an earlier build took of a qcow2 disk over a PVE 9 volume chain: its copy names a
    snapshot file of the live disk, which PVE merges away when that snapshot is deleted."""
    world = healthy
    for name in world.files(world.vol1, 100) + world.files(world.vol2, 100):
        vol = world.vol1 if world.disk(world.vol1, 100, name).exists() else world.vol2
        stem, ext = name.rsplit('.', 1)
        world.disk(vol, 100, f'{stem}-snapshot-{ORIGINAL_STAMP}.{ext}').write_bytes(world.disk(vol, 100, name).read_bytes())
    copy = world.disk(world.vol1, 100, f'vm-100-disk-2-snapshot-{ORIGINAL_STAMP}.qcow2')
    write_qcow2(copy, backing='snap-x-vm-100-disk-2.qcow2', size=2 * 2**30)

    code, lines, error = verify(world, 'vm', 'verify', '-vm', 100)

    assert code == 1 and error.startswith(f'ERROR: VM 100 {ORIGINAL_STAMP}: images/100/vm-100-disk-2-snapshot-')
    assert lines == [(f'FAIL VM 100 {ORIGINAL_STAMP}: images/100/vm-100-disk-2-snapshot-{ORIGINAL_STAMP}.qcow2 on '
                      'ONTAP01 stands on a PVE snapshot of it as a volume chain (its backing file '
                      'snap-x-vm-100-disk-2.qcow2), which PVE merges away when that snapshot is deleted; it is gone '
                      'already; no manifest (made by the original, or before snapshots carried one): its files alone '
                      'are checked, not their sizes')]
    write_qcow2(world.disk(world.vol1, 100, 'snap-x-vm-100-disk-2.qcow2'), size=2 * 2**30)
    still = verify(world, 'vm', 'verify', '-vm', 100)
    assert still[0] == 1 and 'it is gone already' not in still[1][0]
    copy.write_bytes(world.disk(world.vol1, 100, 'vm-100-disk-2.qcow2').read_bytes())
    assert verify(world, 'vm', 'verify', '-vm', 100)[:2] == (0, [(
        f'ok   VM 100 {ORIGINAL_STAMP}: 7 files; no manifest (made by the original, or before snapshots carried one): '
        'its files alone are checked, not their sizes')])


@pytest.mark.parametrize('change, problem', [
    (lambda text: text[:-20], 'manifest {path} on ONTAP01 cannot be read: it is no JSON'),
    (lambda text: text.replace('"memory: 1024', '"memory: 65536'),
     'manifest {path} on ONTAP01 fails its signature check: it was changed since this tool wrote it')])
def test_a_manifest_that_cannot_be_read_or_was_changed_after_signing_fails(healthy, change, problem):
    world = healthy
    stamp = world.vm_snapshot(101, '-no-register')
    path = f'images/101/vm-101-snapshot-{stamp}.shutdown.manifest.json'
    manifest = world.vol1.path / path
    manifest.write_text(change(manifest.read_text()))

    code, lines, error = verify(world, 'vm', 'verify', '-vm', 101)

    assert code == 1
    assert lines[0].startswith(f'FAIL VM 101 {stamp}: {problem.format(path=path)}'), lines
    assert lines[0].endswith('; its files alone are checked, not their sizes')
    assert error.startswith(f'ERROR: VM 101 {stamp}: {problem.format(path=path)}')


def test_a_manifest_of_another_snapshot_put_in_its_place_fails(healthy):
    world = healthy
    first = world.vm_snapshot(101, '-no-register')
    second = world.vm_snapshot(101, '-no-register')
    manifests = [world.vol1.path / f'images/101/vm-101-snapshot-{stamp}.shutdown.manifest.json'
                 for stamp in (first, second)]
    manifests[1].write_bytes(manifests[0].read_bytes())

    (ok, failed) = verdicts(world, 'vm', 'verify', '-vm', 101)

    assert ok['ok'] and not failed['ok']
    assert failed['problems'] == [(f'manifest images/101/vm-101-snapshot-{second}.shutdown.manifest.json on ONTAP01 '
                                   f"is of guest 101, snapshot '{first}', not of 101, {second}: it was put there from "
                                   'elsewhere')]


def test_vm_verify_json_holds_one_verdict_per_snapshot(healthy):
    world = healthy
    stamp = world.vm_snapshot(100, '-no-register')
    world.disk(world.vol1, 100, f'vm-100-disk-5-snapshot-{stamp}.raw').unlink()

    (vm,) = verdicts(world, 'vm', 'verify', '-vm', 100)

    assert vm == {'kind': 'snapshot', 'stamp': stamp, 'vmid': 100, 'ok': False, 'files': 6, 'notes': [],
                  'problems': [f'images/100/vm-100-disk-5-snapshot-{stamp}.raw on ONTAP01 is missing']}


def test_vm_verify_all_verifies_every_vm_with_a_disk_on_a_configured_storage(healthy):
    world = healthy
    result = world.run('vm', 'create', '-all', '-no-register')
    assert result.code == 0, result.err
    (stamp,) = world.vm_stamps(101)
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{stamp}.raw').unlink()

    vms = verify(world, 'vm', 'verify', '-all')

    # VM 102 has a disk on local-lvm alone
    assert vms == (1, [f'ok   VM 100 {stamp}: 7 files',
                       f'FAIL VM 101 {stamp}: images/101/vm-101-disk-0-snapshot-{stamp}.raw on ONTAP01 is missing'],
                   (f'ERROR: verification failed for 1 of 2: VM 101 {stamp} (images/101/vm-101-disk-0-snapshot-'
                    f'{stamp}.raw on ONTAP01 is missing)'))


def test_a_vm_without_snapshots_has_nothing_to_verify(healthy):
    world = healthy

    text = world.run('vm', 'verify', '-vm', 101)
    data = world.run('-output', 'json', 'vm', 'verify', '-vm', 101)

    assert (text.code, text.out) == (0, '') and 'INFO: VM 101 has no snapshot: nothing to verify' in text.err
    assert (data.code, json.loads(data.out)) == (0, [])


def test_a_vm_snapshot_that_is_not_there_fails(healthy):
    vm = verify(healthy, 'vm', 'verify', '-vm', 100, '-snapshot', ORIGINAL_STAMP)

    assert vm == (1, [f'FAIL VM 100 {ORIGINAL_STAMP}: no snapshot {ORIGINAL_STAMP} on any storage of config.ini'],
                  f'ERROR: VM 100 {ORIGINAL_STAMP}: no snapshot {ORIGINAL_STAMP} on any storage of config.ini')


@pytest.mark.parametrize('argv', [('vm', 'verify', '-vm', 100, '-all'), ('vm', 'verify')])
def test_vm_verify_usage_errors_exit_2(world, argv):
    world.usage_error(*argv)


def test_vm_verify_all_with_a_snapshot_is_refused_with_exit_2(world):
    fails_cleanly(world, ['vm', 'verify', '-all', '-snapshot', ORIGINAL_STAMP], 2,
                  '-snapshot names a snapshot of one VM: give it with -vm, not with -all')


def test_a_vm_snapshot_on_a_storage_that_cannot_be_looked_up_fails(healthy):
    world = healthy
    stamp = world.vm_snapshot(100, '-no-register')
    world.b.fail('GET', r'/api/storage/volumes$', status=503, message='cluster B is down', times=None)

    result = world.run('vm', 'verify', '-all')

    assert result.code == 1
    lookup = f'ONTAP {world.b.host}: look up the volume behind ONTAP02 (export /proxmox_storage02): cluster B is down'
    assert f'WARNING: storage ONTAP02 not searched for snapshots: {lookup}' in result.err
    # its snapshot's copies on ONTAP01 are verified all the same
    assert result.out.splitlines() == [
        f'FAIL VM 100: storage ONTAP02 not searched: {lookup}',
        f'FAIL VM 100 {stamp}: ' + '; '.join(f'images/100/vm-100-disk-{n}-snapshot-{stamp}.raw on ONTAP02 is not '
                                             'checked: its storage could not be looked up' for n in (1, 4))]
    assert error_lines(result)[0].startswith(f'ERROR: verification failed for 2 of 2: VM 100 (storage ONTAP02 not '
                                             f'searched: {lookup}); VM 100 {stamp} (images/100/')


def test_vm_verify_requests_grow_by_one_per_snapshot_and_qcow2_copy_never_more(healthy):
    world = healthy
    stamps = [world.vm_snapshot(100, '-no-register') for _ in range(3)]

    # login, VM list, config, storage.cfg; two volumes, a listing on each; per snapshot its manifest
    # and its qcow2 copy's header
    assert world.requests_of('vm', 'verify', '-vm', 100) == (2 + 2 + len(stamps) * 2, 4)


def test_at_most_requests_at_once_are_in_flight(healthy, monkeypatch):
    world = healthy
    for _ in range(4):
        world.vm_snapshot(100, '-no-register')
    monkeypatch.setattr(tool.Parallel, 'REQUESTS_AT_ONCE', 2)
    world.a.latency = 0.05      # so that requests sent together are answered together
    world.a.requests.clear()
    world.a.most_in_flight = 0

    assert world.run('vm', 'verify', '-vm', 100).code == 0

    assert len([r for r in world.ontap_requests(on=world.a) if 'length' in r['query']]) == 8
    assert world.a.most_in_flight <= 2


# -- storage verify

def test_a_healthy_storage_snapshot_verifies_ok_reading_its_record_and_each_guests_directory(healthy):
    world = healthy
    name = storage_snapshot(world)
    before = world.state()
    world.a.requests.clear()

    code, lines, error = verify(world, 'storage', 'verify', '-storage', 'ONTAP01')

    # VM 100's four disks on ONTAP01 and VM 101's one, and the record
    assert (code, lines, error) == (0, [f'ok   storage ONTAP01 {name}: 2 guests, 6 files'], None)
    assert world.state() == before
    # the volume, its snapshots; the record (its size, then its data); a listing of each guest's
    # directory in the snapshot; the header of VM 100's one qcow2 disk there (the guests' in parallel:
    # in any order)
    sent = ontap_requests(world)
    assert sent[:4] == [('GET', 'volumes'), ('GET', 'snapshots'),
                        ('GET', tool.Names.STORAGE_RECORD), ('GET', tool.Names.STORAGE_RECORD)]
    assert sorted(sent[4:]) == [('GET', '100'), ('GET', '101'), ('GET', 'vm-100-disk-2.qcow2')]
    assert world.b.requests == []


def test_a_storage_snapshot_whose_recorded_guests_disk_is_missing_in_it_fails(healthy):
    world = healthy
    name = storage_snapshot(world)
    (world.vol1.snapshots[name].path / 'images/101/vm-101-disk-0.raw').unlink()

    code, lines, error = verify(world, 'storage', 'verify', '-storage', 'ONTAP01', '-snapshot', name)

    problem = f'VM 101: .snapshot/{name}/images/101/vm-101-disk-0.raw is missing'
    assert (code, lines, error) == (1, [f'FAIL storage ONTAP01 {name}: {problem}'],
                                    f'ERROR: storage ONTAP01 {name}: {problem}')


def test_a_storage_snapshots_qcow2_disk_is_read_for_its_virtual_size(healthy):
    world = healthy
    name = storage_snapshot(world)
    write_qcow2(world.vol1.snapshots[name].path / 'images/100/vm-100-disk-2.qcow2', size=2**30)

    (verdict,) = verdicts(world, 'storage', 'verify', '-storage', 'ONTAP01')

    assert verdict['problems'] == [(f'VM 100: .snapshot/{name}/images/100/vm-100-disk-2.qcow2 has a virtual size of '
                                    '1073741824 bytes, not the 2147483648 its manifest records')]


def test_a_storage_snapshot_holds_a_volume_chain_whole_and_fails_where_its_backing_file_is_gone(healthy):
    """A storage snapshot takes the whole volume, a PVE 9 volume chain's snapshot files too: a qcow2
    disk over one holds, as long as the file it stands on is in the snapshot."""
    world = healthy
    write_qcow2(world.disk(world.vol1, 100, 'vm-100-disk-2.qcow2'), backing='snap-before-vm-100-disk-2.qcow2',
                size=2 * 2**30)
    write_qcow2(world.disk(world.vol1, 100, 'snap-before-vm-100-disk-2.qcow2'), size=2 * 2**30)
    name = storage_snapshot(world)

    held = verify(world, 'storage', 'verify', '-storage', 'ONTAP01')
    (world.vol1.snapshots[name].path / 'images/100/snap-before-vm-100-disk-2.qcow2').unlink()
    gone = verify(world, 'storage', 'verify', '-storage', 'ONTAP01')

    assert held == (0, [f'ok   storage ONTAP01 {name}: 2 guests, 6 files'], None)
    snapshot = f'.snapshot/{name}/images/100'
    assert gone[:2] == (1, [(f'FAIL storage ONTAP01 {name}: VM 100: {snapshot}/vm-100-disk-2.qcow2 stands on '
                             f'{snapshot}/snap-before-vm-100-disk-2.qcow2, which is gone')])


def test_a_storage_snapshots_record_that_cannot_be_read_or_is_another_snapshots_fails(healthy):
    world = healthy
    first = storage_snapshot(world)
    second = storage_snapshot(world)
    record = world.vol1.snapshots[second].path / tool.Names.STORAGE_RECORD
    record.write_bytes((world.vol1.snapshots[first].path / tool.Names.STORAGE_RECORD).read_bytes())
    (world.vol1.snapshots[first].path / tool.Names.STORAGE_RECORD).write_text('{"guests": [')

    data = verdicts(world, 'storage', 'verify', '-storage', 'ONTAP01')

    where = f'.snapshot/{{}}/{tool.Names.STORAGE_RECORD} on ONTAP01'
    assert data[0]['problems'][0].startswith(f'record {where.format(first)} cannot be read: it is no JSON')
    assert data[1]['problems'] == [
        f"manifest {where.format(second)} is of guest {vmid}, snapshot '{first}', not of {vmid}, {second}: it was put "
        'there from elsewhere' for vmid in (100, 101)]


def test_a_storage_snapshot_of_the_original_proves_only_that_it_exists_and_says_so(healthy):
    world = healthy
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, comment='Snapshot of Proxmox storage ONTAP01')
    name = storage_snapshot(world)
    (world.vol1.snapshots[name].path / tool.Names.STORAGE_RECORD).unlink()

    code, lines, error = verify(world, 'storage', 'verify', '-storage', 'ONTAP01')

    assert code == 1
    assert lines == [(f'ok   storage ONTAP01 {OLD_SNAPSHOT}: no record (made by the original, or not by this '
                      'tool): only that the snapshot exists is proven'),
                     (f'FAIL storage ONTAP01 {name}: its comment says it holds 2 guest(s), but it holds no record of '
                      'them')]
    assert error == (f'ERROR: verification failed for 1 of 2: storage ONTAP01 {name} (its comment says it holds 2 '
                     'guest(s), but it holds no record of them)')


def test_an_earlier_builds_record_of_one_file_per_guest_is_verified_too(healthy):
    world = healthy
    name = storage_snapshot(world)
    world.as_an_earlier_build_recorded(name)
    (world.vol1.snapshots[name].path / 'images/100/vm-100-disk-0.raw').write_bytes(b'short')

    (verdict,) = verdicts(world, 'storage', 'verify', '-storage', 'ONTAP01')

    assert (verdict['guests'], verdict['files']) == (2, 7)
    assert verdict['problems'] == [(f'VM 100: .snapshot/{name}/images/100/vm-100-disk-0.raw has 5 bytes, not the '
                                    '8192 its manifest records')]


def test_storage_verify_json_holds_one_verdict_per_snapshot(healthy):
    world = healthy
    name = storage_snapshot(world)

    (storage,) = verdicts(world, 'storage', 'verify', '-storage', 'ONTAP01')

    assert storage == {'kind': 'storage snapshot', 'name': name, 'storage': 'ONTAP01', 'ok': True, 'files': 6,
                       'guests': 2, 'notes': [], 'problems': []}


def test_storage_verify_all_verifies_every_storage_of_config_ini(healthy):
    world = healthy
    names = [storage_snapshot(world, storage) for storage in ('ONTAP01', 'ONTAP02')]

    assert verify(world, 'storage', 'verify', '-all') == (0, [f'ok   storage ONTAP01 {names[0]}: 2 guests, 6 files',
                                                              f'ok   storage ONTAP02 {names[1]}: 1 guest, 3 files'],
                                                          None)


def test_a_storage_without_snapshots_has_nothing_to_verify(healthy):
    world = healthy

    text = world.run('storage', 'verify', '-storage', 'ONTAP02')
    data = world.run('-output', 'json', 'storage', 'verify', '-storage', 'ONTAP02')

    assert (text.code, text.out) == (0, '')
    assert 'INFO: storage ONTAP02 has no snapshot of this tool: nothing to verify' in text.err
    assert (data.code, json.loads(data.out)) == (0, [])


def test_a_storage_snapshot_that_is_not_there_fails(healthy):
    storage = verify(healthy, 'storage', 'verify', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert storage == (1, [(f'FAIL storage ONTAP01 {OLD_SNAPSHOT}: volume proxmox_storage01 has no snapshot '
                            f'{OLD_SNAPSHOT}')],
                       f'ERROR: storage ONTAP01 {OLD_SNAPSHOT}: volume proxmox_storage01 has no snapshot {OLD_SNAPSHOT}')


@pytest.mark.parametrize('argv', [('storage', 'verify'), ('storage', 'verify', '-storage', 'ONTAP01', '-all')])
def test_storage_verify_usage_errors_exit_2(world, argv):
    world.usage_error(*argv)


def test_storage_verify_all_with_a_snapshot_is_refused_with_exit_2(world):
    fails_cleanly(world, ['storage', 'verify', '-all', '-snapshot', OLD_SNAPSHOT], 2,
                  '-snapshot names a snapshot of one storage: give it with -storage, not with -all')


def test_storage_verify_requests_grow_by_a_few_per_snapshot_never_more(healthy):
    world = healthy
    names = [storage_snapshot(world) for _ in range(3)]

    # login, storage.cfg; the volume and its snapshots; per snapshot its record (size, data), two
    # guests' directories, one qcow2 header
    assert world.requests_of('storage', 'verify', '-storage', 'ONTAP01') == (2 + len(names) * (2 + 2 + 1), 2)
