"""vm hold|release and storage hold|release, as zfs hold: a VM snapshot is held by one more file of
its set (vm-<vmid>-snapshot-<stamp>.hold beside its manifest), a storage snapshot by `; held` at
the end of its ONTAP comment. -keep and -min-age pass a held snapshot over, a delete refuses it
without -force; vm list and storage list show it."""

import datetime
import json
import os
import pwd
import re

import pytest
from world import (
    OLDER_STAMP,
    OLDEST_STAMP,
    ORIGINAL_STAMP,
    VM101_DISK,
    error_lines,
    fails_cleanly,
    make_set,
    seed_history,
    table,
)

import pve_ontap_snapshot as tool

OLD, OLDER, OLDEST = ORIGINAL_STAMP, OLDER_STAMP, OLDEST_STAMP


@pytest.fixture(autouse=True)
def sudo_user(monkeypatch):
    """The admin who ran the tool through sudo: a hold names them (as root; else the running user)."""
    monkeypatch.setenv('SUDO_USER', 'alice')
    return 'alice' if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def older_sets(world, *stamps):
    """Snapshots of VM 101 as an earlier run (or the original) left them: a clone of its one disk each."""
    for stamp in stamps:
        make_set(world, 101, stamp, [(world.vol1, VM101_DISK)])


def hold_file(world, stamp, vmid=101, vol=None):
    return world.disk(vol or world.vol1, vmid, f'vm-{vmid}-snapshot-{stamp}.hold')


def listed(world, vmid=101):
    """vm list's JSON of the VM, by stamp."""
    return {s['stamp']: s for s in world.vm_snapshots(vmid)}


# -- the names

def test_a_hold_file_is_part_of_its_set_and_no_clone_config_or_manifest():
    hold = tool.Names.snapshot_file('ONTAP01', 'images/101', f'vm-101-snapshot-{OLD}.hold', 40)
    manifest = tool.Names.snapshot_file('ONTAP01', 'images/101', f'vm-101-snapshot-{OLD}.shutdown.manifest.json')
    clone = tool.Names.snapshot_file('ONTAP01', 'images/101', f'vm-101-disk-0-snapshot-{OLD}.raw')

    assert (hold.stamp, hold.kind, hold.path) == (OLD, 'snapshot', tool.Names.hold_path(101, OLD))
    assert (hold.is_hold, hold.is_record, hold.is_clone) == (True, False, False)
    assert (manifest.is_hold, manifest.is_record, manifest.is_clone) == (False, True, False)
    assert (clone.is_hold, clone.is_record, clone.is_clone) == (False, False, True)
    assert tool.Consistency.of_files([hold, clone]) == 'unknown' and tool.Identity.of_files([hold, clone]) is None
    assert tool.VmSnapshots.hold_of([clone, hold, manifest]) is hold
    assert tool.Names.snapshot_file('ONTAP01', 'images/101', f'vm-101-disk-0-snapshot-{OLD}.hold') is None


@pytest.mark.parametrize('comment, counts', [
    ('Snapshot of Proxmox storage ONTAP01; guests: 3 frozen, 1 running', {'frozen': 3, 'running': 1}),
    ('Snapshot of Proxmox storage ONTAP01; guests: 3 frozen, 1 running; held', {'frozen': 3, 'running': 1}),
    ('Snapshot of Proxmox storage ONTAP01; guests: none; held', {}),
    ('Snapshot of Proxmox storage ONTAP01; held', None),
    ('Snapshot of Proxmox storage ONTAP01', None),
])
def test_a_held_comment_still_says_its_guests(comment, counts):
    assert tool.Names.guest_counts(comment) == counts
    assert tool.Names.is_held(comment) == comment.endswith('; held')
    assert tool.Names.held_comment(tool.Names.held_comment(comment)) == comment.removesuffix('; held') + '; held'
    assert tool.Names.held_comment(comment, held=False) == comment.removesuffix('; held')


# -- vm hold, vm release

def test_vm_hold_writes_its_hold_beside_the_manifest_and_vm_list_shows_it(world, sudo_user):
    older_sets(world, OLD)
    stamp = world.vm_snapshot(101, '-no-register')

    result = world.run('vm', 'hold', '-vm', 101, '-snapshot', stamp, '-reason', 'before the upgrade')

    assert result.code == 0, result.err
    assert f'VM 101: snapshot {stamp} held (images/101/vm-101-snapshot-{stamp}.hold on ONTAP01)' in result.err
    hold = json.loads(hold_file(world, stamp).read_text())
    assert hold['held_by'] == sudo_user and hold['reason'] == 'before the upgrade'
    assert re.fullmatch(r'\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\+0000', hold['since'])
    sets = listed(world)
    assert (sets[stamp]['held'], sets[stamp]['hold']) == (True, hold)
    assert (sets[OLD]['held'], sets[OLD]['hold']) == (False, None)
    # the hold is no clone: the snapshot stays complete and of one file, its consistency read as before
    assert sets[stamp]['complete'] and len(sets[stamp]['files']) == 1 and sets[stamp]['consistency'] == 'shutdown'
    rows = table(world.run('vm', 'list', '-vm', 101).out)
    assert rows[0][-2:] == ['OF', 'HELD']
    assert rows[1][0] == OLD and rows[1][-1] == 'no'
    assert rows[2][0] == stamp and rows[2][-1] == f'yes, by {sudo_user} since {hold["since"]} (before the upgrade)'


def test_vm_list_reads_a_hold_only_where_there_is_one(world):
    older_sets(world, OLDER, OLD)
    assert world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD).code == 0
    world.a.requests.clear()

    assert listed(world)[OLD]['hold']['reason'] is None

    reads = [r['path'] for r in world.ontap_requests('GET', '*/files/*', on=world.a) if r['query'].get('length')]
    assert len(reads) == 1 and reads[0].endswith('.hold')


def test_vm_release_removes_the_hold_and_either_twice_is_no_error(world):
    older_sets(world, OLD)

    held = world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD)
    again = world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD, '-reason', 'another')
    assert held.code == again.code == 0, again.err
    assert f'VM 101: snapshot {OLD} is held already by ' in again.err
    assert json.loads(hold_file(world, OLD).read_text())['reason'] is None

    released = world.run('vm', 'release', '-vm', 101, '-snapshot', OLD)
    twice = world.run('vm', 'release', '-vm', 101, '-snapshot', OLD)

    assert released.code == twice.code == 0, twice.err
    assert f'VM 101: snapshot {OLD} released' in released.err
    assert f'INFO: VM 101: snapshot {OLD} is not held: nothing changed' in twice.err
    assert not hold_file(world, OLD).exists()
    assert world.clones(world.vol1, 101) == [f'vm-101-disk-0-snapshot-{OLD}.raw']
    assert listed(world)[OLD]['held'] is False


def test_a_held_snapshot_of_the_original_is_held_beside_its_first_clone(world):
    seed_history(world)

    result = world.run('vm', 'hold', '-vm', 100, '-snapshot', ORIGINAL_STAMP)

    assert result.code == 0, result.err
    assert hold_file(world, ORIGINAL_STAMP, vmid=100).exists()
    assert not hold_file(world, ORIGINAL_STAMP, vmid=100, vol=world.vol2).exists()
    (snapshot,) = listed(world, 100).values()
    assert snapshot['held'] and snapshot['complete'] and snapshot['consistency'] == 'unknown'


def test_a_held_snapshot_is_restored_as_any_other(world):
    older_sets(world, OLD)
    then = world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{OLD}.raw').read_bytes()
    assert world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD).code == 0

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLD, '-yes')

    assert result.code == 0, result.err
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == then
    assert hold_file(world, OLD).exists()


def test_vm_keep_never_counts_or_deletes_a_held_snapshot(world):
    older_sets(world, OLDEST, OLDER, OLD)
    assert world.run('vm', 'hold', '-vm', 101, '-snapshot', OLDEST).code == 0
    assert world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD).code == 0

    result = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert result.code == 0, result.err
    assert (f'INFO: VM 101: -keep 1 neither counts nor deletes the held snapshot(s) {OLDEST}, {OLD} (vm release lets '
            'one go)') in result.err
    stamps = sorted(listed(world))
    assert stamps[:2] == [OLDEST, OLD] and len(stamps) == 3    # OLDER went; the new one is the one kept
    assert hold_file(world, OLDEST).exists() and hold_file(world, OLD).exists()


def test_vm_delete_refuses_a_held_snapshot_and_deletes_it_with_force(world, sudo_user):
    older_sets(world, OLD)
    assert world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD, '-reason', 'audit').code == 0
    since = json.loads(hold_file(world, OLD).read_text())['since']
    before = world.state()

    for dry in ((), ('-dry-run',)):
        refused = world.run(*dry, 'vm', 'delete', '-vm', 101, '-snapshot', OLD)
        assert refused.code == 1
        assert error_lines(refused) == [(
            f'ERROR: VM 101: snapshot {OLD} is held by {sudo_user} since {since} (audit) (images/101/vm-101-snapshot-'
            f'{OLD}.hold on ONTAP01): release it first (vm release -vm 101 -snapshot {OLD}), or add -force to delete '
            'it held')]
    assert world.state() == before

    forced = world.run('vm', 'delete', '-vm', 101, '-snapshot', OLD, '-force')

    assert forced.code == 0, forced.err
    assert f'VM 101: snapshot {OLD}, held, deleted (2 file(s))' in forced.err
    assert world.files(world.vol1, 101) == [VM101_DISK]


def test_vm_hold_and_release_change_nothing_in_a_dry_run(world):
    older_sets(world, OLD)
    before = world.state()

    result = world.run('-dry-run', 'vm', 'hold', '-vm', 101, '-snapshot', OLD)

    assert result.code == 0, result.err
    assert f'would write images/101/vm-101-snapshot-{OLD}.hold in volume proxmox_storage01' in result.out
    assert world.state() == before
    assert world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD).code == 0
    before = world.state()

    result = world.run('-dry-run', 'vm', 'release', '-vm', 101, '-snapshot', OLD)

    assert result.code == 0, result.err
    assert f'would delete images/101/vm-101-snapshot-{OLD}.hold in volume proxmox_storage01' in result.out
    assert world.state() == before


def test_a_hold_or_release_whose_answer_is_lost_is_read_back(world):
    older_sets(world, OLD)
    world.a.lose_answer('POST', r'\.hold$')

    held = world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD)

    assert held.code == 0, held.err
    assert hold_file(world, OLD).exists()
    world.a.lose_answer('DELETE', r'\.hold$')

    released = world.run('vm', 'release', '-vm', 101, '-snapshot', OLD)

    assert released.code == 0, released.err
    assert not hold_file(world, OLD).exists()
    lookups = [r for r in world.ontap_requests('GET', '*.hold', on=world.a) if r['query'].get('return_metadata')]
    assert [r['status'] for r in lookups] == [200, 404]


def test_a_hold_that_cannot_be_read_back_is_said_to_be_unknown(world):
    older_sets(world, OLD)
    world.a.lose_answer('POST', r'\.hold$')
    world.a.fail('GET', r'^/api/cluster/jobs$', status=403, code='6', message='not authorized for that command')

    result = world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD)

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: VM 101: whether snapshot {OLD} is held is unknown: ONTAP ')
    assert 'after the request went out' in line and line.endswith('vm list shows it once ONTAP has ended the change')


def test_a_hold_that_fails_says_so_and_leaves_nothing(world):
    older_sets(world, OLD)
    world.a.fail('POST', r'\.hold$', status=403, code='6', message='not authorized for that command')
    before = world.state()

    result = world.run('vm', 'hold', '-vm', 101, '-snapshot', OLD)

    assert result.code == 1
    assert error_lines(result) == [(
        f'ERROR: VM 101: snapshot {OLD} is not held: ONTAP {world.a.host}: write images/101/vm-101-snapshot-{OLD}.hold '
        'in volume proxmox_storage01: not authorized for that command')]
    assert world.state() == before


@pytest.mark.parametrize('argv, error', [
    (('vm', 'hold', '-vm', 101, '-snapshot', OLDER), f'VM 101 has no snapshot {OLDER} (it has: {OLD})'),
    (('vm', 'release', '-vm', 101, '-snapshot', OLDER), f'VM 101 has no snapshot {OLDER} (it has: {OLD})'),
    (('vm', 'hold', '-vm', 999, '-snapshot', OLD), 'no VM 999'),
])
def test_a_hold_of_what_is_not_there_is_one_line_and_changes_nothing(world, argv, error):
    older_sets(world, OLD)

    fails_cleanly(world, argv, 1, error)


# -- storage hold, storage release

def storage_comments(world):
    """{name: comment} of the tool's snapshots of ONTAP01's volume."""
    return {name: snap.comment for name, snap in world.vol1.snapshots.items() if name.startswith('proxmox_snapshot_')}


def storage_listed(world):
    """storage list's JSON of ONTAP01, by name."""
    return {s['name']: s for s in world.json('storage', 'list', '-storage', 'ONTAP01')}


def test_storage_hold_ends_the_comment_with_held_and_storage_list_shows_it(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    ((name, comment),) = storage_comments(world).items()
    assert comment == 'Snapshot of Proxmox storage ONTAP01; guests: 1 running, 1 shutdown'
    world.a.requests.clear()

    result = world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', name)

    assert result.code == 0, result.err
    assert f'INFO: storage ONTAP01: snapshot {name} held: -keep and -min-age pass it over' in result.err
    assert storage_comments(world) == {name: f'{comment}; held'}
    assert [(r['method'], r['body']) for r in world.ontap_changes(on=world.a)] == [
        ('PATCH', {'comment': f'{comment}; held'})]
    listed = storage_listed(world)[name]
    assert (listed['held'], listed['guests'], listed['consistency']) == (True, 2, {'running': 1, 'shutdown': 1})
    rows = table(world.run('storage', 'list', '-storage', 'ONTAP01').out)
    assert rows[0][-2:] == ['COMMENT', 'HELD'] and rows[1][-1] == 'yes'
    assert rows[1][4:6] == ['2', '1 running, 1 shutdown']

    released = world.run('storage', 'release', '-storage', 'ONTAP01', '-snapshot', name)

    assert released.code == 0, released.err
    assert f'INFO: storage ONTAP01: snapshot {name} released' in released.err
    assert storage_comments(world) == {name: comment}
    assert storage_listed(world)[name]['held'] is False
    assert table(world.run('storage', 'list', '-storage', 'ONTAP01').out)[1][-1] == 'no'


def test_storage_hold_or_release_twice_is_no_error_and_changes_nothing(world):
    seed_history(world)
    before = storage_comments(world)

    released = world.run('storage', 'release', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_' + OLD)
    assert released.code == 0, released.err
    assert f'INFO: storage ONTAP01: snapshot proxmox_snapshot_{OLD} is not held: nothing changed' in released.err
    assert world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_' + OLD).code == 0
    held = storage_comments(world)
    world.a.requests.clear()

    again = world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_' + OLD)

    assert again.code == 0, again.err
    assert f'INFO: storage ONTAP01: snapshot proxmox_snapshot_{OLD} is held already: nothing changed' in again.err
    assert storage_comments(world) == held != before
    assert world.ontap_changes(on=world.a) == []


def test_a_held_snapshot_of_the_original_keeps_its_comment_and_adds_held(world):
    seed_history(world)
    name = 'proxmox_snapshot_' + OLD

    result = world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', name)

    assert result.code == 0, result.err
    assert storage_comments(world)[name] == 'Snapshot of Proxmox storage ONTAP01; held'
    listed = storage_listed(world)[name]
    assert (listed['held'], listed['guests'], listed['consistency']) == (True, None, None)
    assert [s['held'] for s in storage_listed(world).values()] == [False, True, False]


def test_storage_keep_never_counts_or_deletes_a_held_snapshot(world):
    seed_history(world)     # three snapshots of the original, of 2024-03-12, -13 and -14
    for name in ('proxmox_snapshot_' + OLDER, 'proxmox_snapshot_' + OLD):
        assert world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', name).code == 0

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 1)

    assert result.code == 0, result.err
    assert (f'INFO: storage ONTAP01: -keep 1 neither counts nor deletes the held snapshot(s) proxmox_snapshot_{OLDER}, '
            f'proxmox_snapshot_{OLD} (storage release lets one go)') in result.err
    names = sorted(storage_comments(world))
    assert names[:2] == ['proxmox_snapshot_' + OLDER, 'proxmox_snapshot_' + OLD] and len(names) == 3
    assert 'proxmox_snapshot_2024-03-14_10:00:00+0000' not in names      # not held: beyond -keep 1


def test_storage_min_age_does_not_count_a_held_snapshot(world):
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2026-01-01_00:00:00+0000',
                         comment='Snapshot of Proxmox storage ONTAP01; guests: none; held',
                         create_time=datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'))

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-min-age', '12h')

    assert result.code == 0, result.err
    assert ('INFO: storage ONTAP01: -min-age 12h does not count the held snapshot(s) '
            'proxmox_snapshot_2026-01-01_00:00:00+0000') in result.err
    assert len(storage_comments(world)) == 2

    again = world.run('storage', 'create', '-storage', 'ONTAP01', '-min-age', '12h')

    assert again.code == 0, again.err
    assert 'is younger than -min-age 12h: none taken' in again.err and len(storage_comments(world)) == 2


def test_storage_delete_refuses_a_held_snapshot_and_deletes_it_with_force(world):
    seed_history(world)
    name = 'proxmox_snapshot_' + OLD
    assert world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', name).code == 0
    before = world.state()

    for dry in ((), ('-dry-run',)):
        refused = world.run(*dry, 'storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name)
        assert refused.code == 1
        assert error_lines(refused) == [(
            f'ERROR: storage ONTAP01: snapshot {name} is held (its comment ends "; held"): release it first (storage '
            f'release -storage ONTAP01 -snapshot {name}), or add -force to delete it held')]
        assert 'would ' not in refused.out
    assert world.state() == before

    forced = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name, '-force')

    assert forced.code == 0, forced.err
    assert name not in storage_comments(world) and len(storage_comments(world)) == 2


def test_storage_hold_and_release_change_nothing_in_a_dry_run(world):
    seed_history(world)
    name = 'proxmox_snapshot_' + OLD

    for command, comment in (('hold', 'Snapshot of Proxmox storage ONTAP01; held'),
                             ('release', 'Snapshot of Proxmox storage ONTAP01')):
        before = storage_comments(world)

        result = world.run('-dry-run', 'storage', command, '-storage', 'ONTAP01', '-snapshot', name)

        assert result.code == 0, result.err
        assert f'would set the comment of snapshot {name} of volume proxmox_storage01 to "{comment}"' in result.out
        assert storage_comments(world) == before
        assert world.run('storage', command, '-storage', 'ONTAP01', '-snapshot', name).code == 0
        assert storage_comments(world)[name] == comment


def test_a_storage_hold_whose_answer_is_lost_is_read_back(world):
    seed_history(world)
    name = 'proxmox_snapshot_' + OLD
    world.a.lose_answer('PATCH', r'/snapshots/')

    result = world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', name)
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert storage_comments(world)[name] == 'Snapshot of Proxmox storage ONTAP01; held'
    patch = next(n for n, r in enumerate(world.a.requests) if r['method'] == 'PATCH')
    assert [r for r in world.a.requests[patch + 1:] if r['path'].endswith('/snapshots')]     # read back


def test_a_storage_hold_that_cannot_be_read_back_is_said_to_be_unknown(world):
    seed_history(world)
    name = 'proxmox_snapshot_' + OLD
    world.a.lose_answer('PATCH', r'/snapshots/')
    world.a.fail('GET', r'^/api/cluster/jobs$', status=403, code='6', message='not authorized for that command')

    result = world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', name)
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: storage ONTAP01: whether snapshot {name} is held is unknown: ONTAP ')
    assert line.endswith('storage list shows it once ONTAP has ended the change')


def test_a_storage_hold_that_fails_says_so_and_leaves_the_comment(world):
    seed_history(world)
    name = 'proxmox_snapshot_' + OLD
    world.a.fail('PATCH', r'/snapshots/', status=403, code='6', message='not authorized for that command')
    before = storage_comments(world)

    result = world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', name)

    assert result.code == 1
    assert error_lines(result) == [(
        f'ERROR: storage ONTAP01: snapshot {name} is not held: ONTAP {world.a.host}: set the comment of snapshot {name} '
        'of volume proxmox_storage01 to "Snapshot of Proxmox storage ONTAP01; held": not authorized for that command')]
    assert storage_comments(world) == before


@pytest.mark.parametrize('snapshot, comment, error', [
    ('proxmox_snapshot_nope', '', 'ONTAP {host}: volume proxmox_storage01 has no snapshot proxmox_snapshot_nope'),
    ('proxmox_snapshot_' + OLD, 'x' * 250, 'storage ONTAP01: snapshot proxmox_snapshot_' + OLD + ' cannot be held: its '
     'comment would be longer than the 255 characters ONTAP keeps; shorten it on ONTAP (volume snapshot modify '
     '-comment) and hold it again'),
])
def test_a_storage_hold_that_cannot_be_made_is_one_line_and_changes_nothing(world, snapshot, comment, error):
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_' + OLD, comment=comment)
    before = storage_comments(world)

    result = world.run('storage', 'hold', '-storage', 'ONTAP01', '-snapshot', snapshot)

    assert result.code == 1
    assert result.err.strip().splitlines() == ['ERROR: ' + error.format(host=world.a.host)]
    assert storage_comments(world) == before
