"""storage list, storage show and storage delete: the tool's snapshots of the volume behind a
storage, oldest first, with how many guests each holds and how consistent; the volume's metadata;
and deleting one snapshot, by its exact name only, never one a mounted clone stands on."""

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
    assert lines[0].split() == ['NAME', 'CREATED', 'SIZE', 'LABEL', 'GUESTS', 'CONSISTENCY', 'COMMENT']
    assert [line.split()[0] for line in lines[1:]] == [OLD_SNAPSHOT, MARCH_SNAPSHOT]
    assert 'made by the original' in lines[1]


def test_list_as_json(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, comment='c', create_time='2024-03-13T14:42:47+00:00')
    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')
    data = json.loads(result.out)
    assert [s['name'] for s in data] == [OLD_SNAPSHOT]
    assert set(data[0]) == {'name', 'create_time', 'size', 'label', 'comment', 'guests'}


def test_list_orders_snapshots_by_time_across_a_dst_change(world):
    snapshots_across_a_dst_change(world)

    result = world.run('storage', 'list', '-storage', 'ONTAP01', '-output', 'json')

    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert [s['name'] for s in listed] == [DST_A, DST_B]
    assert [s['create_time'] for s in listed] == ['2024-10-27T02:30:00+02:00', '2024-10-27T02:15:00+01:00']


def test_storage_list_shows_how_many_guests_each_snapshot_holds_and_how_consistent(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, create_time='2024-03-13T14:42:47+00:00')
    add_container(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (_, name) = world.storage_snapshots()

    text = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')
    data = world.json('storage', 'list', '-storage', 'ONTAP01')

    assert text.code == 0 and text.err == ''
    header, old, new = text.out.splitlines()
    assert header.split()[4:6] == ['GUESTS', 'CONSISTENCY']
    # NAME CREATED SIZE (a number and its unit) LABEL GUESTS CONSISTENCY COMMENT
    assert old.split()[5:7] == ['-', 'unknown']
    assert re.match(r'3 +1 running, 1 atomic, 1 shutdown +Snapshot of', new.split(maxsplit=5)[5])
    assert [s['name'] for s in data] == [OLD_SNAPSHOT, name]
    assert data[0]['guests'] is None
    assert data[1]['guests'] == [{'vmid': 100, 'type': 'qemu', 'consistency': 'running'},
                                 {'vmid': 101, 'type': 'qemu', 'consistency': 'shutdown'},
                                 {'vmid': 200, 'type': 'lxc', 'consistency': 'atomic'}]


def test_a_snapshot_whose_records_cannot_be_read_lists_as_unknown_with_a_warning(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    world.a.fail('GET', r'snapshot.*pve-ontap-snapshot', status=403, code='6', message='not permitted')

    result = world.run('-output', 'json', 'storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert json.loads(result.out)[0]['guests'] is None
    assert 'WARNING: storage ONTAP01: what 1 snapshot(s) hold could not be read, shown as unknown' in result.err


@pytest.mark.parametrize('names, expected', [
    ([], []),
    (['vm-100.conf'], []),
    (['ct-7.conf', 'ct-7.paused.manifest.json', 'vm-10.frozen.manifest.json', 'notes.txt', 'vm-9.bogus.manifest.json'],
     [{'vmid': 7, 'type': 'lxc', 'consistency': 'paused'}, {'vmid': 10, 'type': 'qemu', 'consistency': 'frozen'}])])
def test_recorded_guests_come_from_manifest_names(names, expected):
    assert tool.Names.recorded_guests(names) == expected


@pytest.mark.parametrize('words, expected', [
    ([], '-'), (['running'], '1 running'),
    (['running', 'frozen', 'frozen', 'frozen'], '3 frozen, 1 running'),
    (['shutdown', 'atomic'], '1 atomic, 1 shutdown')])
def test_consistency_summary_counts_most_first(words, expected):
    assert tool.Consistency.summary([{'consistency': word} for word in words]) == expected


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
        result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name)
        assert result.code == 1 and result.err.strip().endswith(f'has no snapshot {name}')

    assert world.storage_snapshots() == [OLD_SNAPSHOT, MARCH_SNAPSHOT]


def test_delete_waits_for_a_job_that_outlasts_return_timeout(world):
    world.write_config(defaults='read_timeout = 6\n')   # return_timeout = 1 s
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.a.slow_job('DELETE', r'/snapshots$', 1.2)

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 0, result.err
    assert world.storage_snapshots() == []
    assert world.ontap_requests(path='/api/cluster/jobs/*', on=world.a)


def test_a_query_based_delete_is_understood_in_every_answer_shape(world):
    for shape in ('jobs', 'job', 'bare'):
        name = f'proxmox_snapshot_2024-03-13_14:42:4{len(shape)}+0000'
        world.a.add_snapshot('proxmox_storage01', name)
        world.a.collection_delete_answer = shape

        result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name)

        assert result.code == 0, (shape, result.err)
        assert name not in world.vol1.snapshots


def test_a_query_based_delete_that_matched_nothing_says_so_when_ontap_tells(world):
    world.a.collection_delete_answer = 'job'

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_nothing')

    assert error_lines(result) == [f'ERROR: ONTAP {world.a.host}: volume proxmox_storage01 has no snapshot proxmox_snapshot_nothing']


@pytest.mark.newest_release
def test_storage_delete_takes_four_requests_and_three_with_a_token(world):
    """The snapshot goes by a query-based DELETE filtered by its name, answered without a job
    poll, so its UUID needs no lookup. An API token saves the PVE login."""
    for name in ('proxmox_snapshot_a', 'proxmox_snapshot_b'):
        world.a.add_snapshot('proxmox_storage01', name)
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_a') == (2, 2)
    world.pve.apitokens['root@pam!backup'] = 'token-value'
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               'proxmox_token_name = backup\nproxmox_token_value = token-value\n'
                               f'proxmox_verify = {world.pve_cafile}\n')
    assert world.requests_of('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_b') == (2, 1)
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
