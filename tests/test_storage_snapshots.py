"""storage list, storage show and storage delete: the tool's snapshots of the volume behind a
storage, oldest first, with how many guests each holds and how consistent (from the snapshot's
comment); the volume's metadata, and with -snapshot each guest a snapshot's record holds; and
deleting one snapshot, by its exact name only, never one a mounted clone stands on."""

import json
import re

import pytest
from world import (
    DST_A,
    DST_B,
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    add_container,
    error_lines,
    fails_cleanly,
    snapshots_across_a_dst_change,
    table,
)

import pve_ontap_snapshot as tool

# -- storage list

def test_list_shows_only_the_tools_snapshots_oldest_first(world):
    world.a.add_snapshot('proxmox_storage01', MARCH_SNAPSHOT, comment='newer',
                         create_time='2024-03-14T10:00:00+00:00')
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, comment='made by the original',
                         create_time='2024-03-13T14:42:47+00:00')
    world.a.add_snapshot('proxmox_storage01', 'hourly.2024-03-14_0905', create_time='2024-03-14T09:05:00+00:00')

    result = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0 and result.err == ''
    lines = result.out.splitlines()
    assert lines[0].split() == ['NAME', 'CREATED', 'SIZE', 'LABEL', 'GUESTS', 'CONSISTENCY', 'COMMENT', 'HELD']
    assert [line.split()[0] for line in lines[1:]] == [OLD_SNAPSHOT, MARCH_SNAPSHOT]
    assert 'made by the original' in lines[1]


def test_list_as_json(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, comment='c', create_time='2024-03-13T14:42:47+00:00')
    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')
    data = json.loads(result.out)
    assert [s['name'] for s in data] == [OLD_SNAPSHOT]
    assert set(data[0]) == {'name', 'create_time', 'size', 'label', 'comment', 'guests', 'consistency', 'held'}


def test_list_orders_snapshots_by_time_across_a_dst_change(world):
    snapshots_across_a_dst_change(world)

    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')

    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert [s['name'] for s in listed] == [DST_A, DST_B]
    assert [s['create_time'] for s in listed] == ['2024-10-27T02:30:00+02:00', '2024-10-27T02:15:00+01:00']


def test_storage_list_reads_what_each_snapshot_holds_from_the_listing_alone(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, create_time='2024-03-13T14:42:47+00:00')
    add_container(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (_, name) = world.storage_snapshots()
    world.a.requests.clear()

    text = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')
    data = world.json('storage', 'list', '-storage', 'ONTAP01')

    assert text.code == 0 and text.err == ''
    header, old, new = text.out.splitlines()
    assert header.split()[4:6] == ['GUESTS', 'CONSISTENCY']
    # NAME CREATED SIZE (a number and its unit) LABEL GUESTS CONSISTENCY COMMENT
    assert old.split()[5:7] == ['-', 'unknown']
    assert re.match(r'3 +1 running, 1 atomic, 1 shutdown +Snapshot of', new.split(maxsplit=5)[5])
    assert [s['name'] for s in data] == [OLD_SNAPSHOT, name]
    assert (data[0]['guests'], data[0]['consistency']) == (None, None)
    assert (data[1]['guests'], data[1]['consistency']) == (3, {'running': 1, 'atomic': 1, 'shutdown': 1})
    # per run: the volume and its snapshots, nothing per snapshot
    assert [r['path'].rsplit('/', 1)[-1] for r in world.ontap_requests(on=world.a)] == ['volumes', 'snapshots'] * 2


@pytest.mark.parametrize('names, expected', [
    ([], []),
    (['vm-100.conf'], []),
    (['ct-7.conf', 'ct-7.paused.manifest.json', 'vm-10.frozen.manifest.json', 'notes.txt', 'vm-9.bogus.manifest.json'],
     [{'vmid': 7, 'type': 'lxc', 'consistency': 'paused'}, {'vmid': 10, 'type': 'qemu', 'consistency': 'frozen'}])])
def test_recorded_guests_come_from_the_manifest_names_of_earlier_builds(names, expected):
    assert tool.Names.recorded_guests(names) == expected


@pytest.mark.parametrize('counts, expected', [
    ({}, '-'), ({'running': 1}, '1 running'),
    ({'running': 1, 'frozen': 3}, '3 frozen, 1 running'),
    ({'shutdown': 1, 'atomic': 1}, '1 atomic, 1 shutdown')])
def test_consistency_summary_counts_most_first_and_reads_back_from_the_comment(counts, expected):
    assert tool.Consistency.summary(counts) == expected
    comment = tool.Names.storage_snapshot_comment('ONTAP01', counts)
    assert comment == f'Snapshot of Proxmox storage ONTAP01; guests: {expected if counts else "none"}'
    assert tool.Names.guest_counts(comment) == counts


@pytest.mark.parametrize('comment', ['Snapshot of Proxmox storage ONTAP01', '', None, 'guests: 3 running'])
def test_a_comment_that_says_nothing_of_guests_counts_none(comment):
    assert tool.Names.guest_counts(comment) is None



@pytest.mark.newest_release
def test_listing_a_thousand_snapshots_is_one_request(world):
    for n in range(1000):
        world.b.add_snapshot('proxmox_storage02', f'proxmox_snapshot_2024-01-01_00:{n // 60:02d}:{n % 60:02d}+0000')
    world.b.requests.clear()

    result = world.run('-output', 'json', 'storage', 'list', '-storage', 'ONTAP02')

    assert result.code == 0 and result.out.count('"name"') == 1000
    assert len(world.ontap_requests(path='*/snapshots', on=world.b)) == 1


# -- storage show

def test_show_prints_the_volume(world):
    result = world.run('storage', 'show', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    fields = dict(line.split(None, 1) for line in result.out.splitlines())
    assert fields['name'] == 'proxmox_storage01'
    assert fields['nas.path'] == '/proxmox_storage01'
    assert fields['svm.name'] == 'svm1'
    assert fields['uuid'] == world.vol1.uuid


def test_storage_show_of_a_snapshot_names_each_guest_it_holds(world):
    add_container(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (name,) = world.storage_snapshots()

    text = world.run('storage', 'show', '-storage', 'ONTAP01', '-snapshot', name)
    data = world.json('storage', 'show', '-storage', 'ONTAP01', '-snapshot', name)

    assert text.code == 0, text.err
    rows = table(text.out.split('\n\n')[1])
    assert rows == [['GUEST', 'NAME', 'NODE', 'CONSISTENCY', 'DISKS', 'SIGNED'],
                    ['VM 100', 'web', 'pve1', 'running', 'efidisk0, ide0, scsi0, tpmstate0', 'yes'],
                    ['VM 101', 'db', 'pve2', 'shutdown', 'scsi0', 'yes'],
                    ['CT 200', 'files', 'pve2', 'atomic', 'rootfs', 'yes']]
    assert data['name'] == name and [g['vmid'] for g in data['guests']] == [100, 101, 200]


def test_storage_show_reads_the_records_of_earlier_builds_and_says_where_there_are_none(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (name,) = world.storage_snapshots()
    world.as_an_earlier_build_recorded(name)
    (world.vol1.path / tool.Names.STORAGE_RECORD).unlink()
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)

    earlier = world.json('storage', 'show', '-storage', 'ONTAP01', '-snapshot', name)
    original = world.run('storage', 'show', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert [(g['vmid'], g['type'], g['consistency']) for g in earlier['guests']] == [
        (100, 'qemu', 'running'), (101, 'qemu', 'shutdown')]
    assert original.code == 0, original.err
    assert 'guests       not recorded (a snapshot made by the original tool)' in original.out


def test_an_earlier_builds_manifest_that_is_no_json_is_a_warning_and_the_other_guests_are_shown(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (name,) = world.storage_snapshots()
    world.as_an_earlier_build_recorded(name, lambda guest, manifest: json.dumps(manifest) if guest != 'vm-101'
                                       else '{"vmid": 101, "config": ')     # cut short

    result = world.run('-output', 'json', 'storage', 'show', '-storage', 'ONTAP01', '-snapshot', name)

    assert result.code == 0, result.err
    assert [g['vmid'] for g in json.loads(result.out)['guests']] == [100]
    assert 'vm-101.shutdown.manifest.json' in result.err and 'it is no JSON' in result.err
    assert 'Traceback' not in result.err


def test_a_record_of_more_than_a_megabyte_is_written_and_read_a_megabyte_at_a_time(world):
    # PVE keeps a description of up to 8 KiB (qemu-server: description, maxLength 8192)
    for vmid in range(300, 440):
        world.pve.add_vm(vmid, f'vm{vmid}', status='stopped', config={
            'scsi0': f'ONTAP01:{vmid}/vm-{vmid}-disk-0.raw,size=1G', 'description': 'x' * 8000})
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (name,) = world.storage_snapshots()
    world.a.requests.clear()

    data = world.json('storage', 'show', '-storage', 'ONTAP01', '-snapshot', name)

    assert (world.vol1.path / tool.Names.STORAGE_RECORD).stat().st_size > 2**20
    assert len(data['guests']) == 142
    reads = [r for r in world.ontap_requests('GET', '*/files/*', on=world.a) if r['query'].get('length')]
    assert [int(r['query']['byte_offset']) for r in reads] == [0, 2**20]


# -- storage delete

def test_delete_removes_the_snapshot(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.a.add_snapshot('proxmox_storage01', MARCH_SNAPSHOT)

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 0, result.err
    assert world.storage_snapshots() == [MARCH_SNAPSHOT]


def test_delete_of_an_unknown_snapshot_is_an_error(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)

    result = fails_cleanly(world, ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_nope'), 1)

    assert result.err.strip() == (f'ERROR: ONTAP {world.a.host}: volume proxmox_storage01 has no snapshot '
                                  'proxmox_snapshot_nope')
    assert world.storage_snapshots() == [OLD_SNAPSHOT]


def test_delete_of_a_wildcard_name_deletes_nothing(world):
    """A name with a query operator must not reach ONTAP as a filter of a query-based DELETE."""
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.a.add_snapshot('proxmox_storage01', MARCH_SNAPSHOT)

    for name in ('proxmox_snapshot_*', '!nothing', f'{OLD_SNAPSHOT}|proxmox_snapshot_2024-03-14_10:00:00+0000'):
        for force in ((), ('-force',)):
            result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name, *force)
            assert result.code == 1 and result.err.strip().endswith(f'has no snapshot {name}')

    assert world.storage_snapshots() == [OLD_SNAPSHOT, MARCH_SNAPSHOT]


@pytest.mark.parametrize('name, literal', [
    ('proxmox_snapshot_2024-03-13_14:42:47+0000', True), ('hourly.2024-03-13_1305', True),
    ('proxmox_snapshot_*', False), ('a|b', False), ('a,b', False), ('!a', False), ('<a', False),
    ('a..b', False), ('"a"', False), ('{a}', False), ('null', False), ('NULL', False), ('', False)])
def test_only_a_name_without_query_operators_is_a_literal_filter(name, literal):
    assert tool.Ontap.is_literal_query(name) is literal


@pytest.mark.parametrize('force', [(), ('-force',)], ids=['by uuid', 'by name, -force'])
def test_delete_waits_for_a_job_that_outlasts_return_timeout(world, force):
    world.write_config(defaults='read_timeout = 6\n')   # return_timeout = 1 s
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.a.slow_job('DELETE', r'/snapshots(/|$)', 1.2)

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, *force)

    assert result.code == 0, result.err
    assert world.storage_snapshots() == []
    assert world.ontap_requests(path='/api/cluster/jobs/*', on=world.a)


def test_a_query_based_delete_is_understood_in_every_answer_shape(world):
    """storage delete -force deletes by name, unread (without -force the snapshot is read for its hold)."""
    for shape in ('jobs', 'job', 'bare'):
        name = f'proxmox_snapshot_2024-03-13_14:42:4{len(shape)}+0000'
        world.a.add_snapshot('proxmox_storage01', name)
        world.a.collection_delete_answer = shape

        result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name, '-force')

        assert result.code == 0, (shape, result.err)
        assert name not in world.vol1.snapshots


def test_a_query_based_delete_that_matched_nothing_says_so_when_ontap_tells(world):
    world.a.collection_delete_answer = 'job'

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_nothing', '-force')

    assert error_lines(result) == [f'ERROR: ONTAP {world.a.host}: volume proxmox_storage01 has no snapshot proxmox_snapshot_nothing']


@pytest.mark.newest_release
def test_storage_delete_takes_five_requests_four_with_force_and_three_with_a_token(world):
    """The snapshot is read for its hold (in its comment) and deleted by its UUID, answered without
    a job poll. -force deletes it unread, by a query-based DELETE filtered by its name. An API
    token saves the PVE login."""
    for name in ('proxmox_snapshot_a', 'proxmox_snapshot_b', 'proxmox_snapshot_c'):
        world.a.add_snapshot('proxmox_storage01', name)
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_a') == (3, 2)
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_b',
                             '-force') == (2, 2)
    world.pve.apitokens['root@pam!backup'] = 'token-value'
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               'proxmox_token_name = backup\nproxmox_token_value = token-value\n'
                               f'proxmox_verify = {world.pve_cafile}\n')
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_c',
                             '-force') == (2, 1)
    assert not [name for name in world.vol1.snapshots if name.startswith('proxmox_snapshot_')]


@pytest.mark.parametrize('dry', [(), ('-dry-run',)], ids=['real', 'dry run'])
def test_deleting_a_snapshot_that_backs_a_mount_names_the_clone_and_the_storage(world, dry):
    world.add_storage_snapshots()
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    before = world.state()

    result = world.run(*dry, 'storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: snapshot {OLD_SNAPSHOT} of volume proxmox_storage01 is in use by '
                                   'FlexClone proxmox_storage01_clone, mounted as PVE storage ONTAP01-CLONE: unmount '
                                   'ONTAP01-CLONE first')]
    assert 'would ' not in result.out
    assert world.state() == before
