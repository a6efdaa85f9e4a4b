"""The command line as an admin types it: repeated options, abbreviations, ids and numbers, usage
errors; and the global options every command takes: -dry-run (the plan, no change), -loglevel
warn (silent when all is well), -output json.

The parser tests need nothing but the standard library, so they also run on interpreters
without the test world (`python3.13 -m pytest --noconftest -o addopts= -k parser`)."""

import contextlib
import io

import pytest

import pve_ontap_snapshot as tool

OLD = 'proxmox_snapshot_2024-03-13_14:42:47+0000'
STAMP = '2024-03-13_14:42:47+0000'


def parse(*argv):
    """The parsed options, or (exit code, the error line) for a usage error."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return tool.build_parser().parse_args(list(argv))
    except SystemExit as exit_:
        return exit_.code, stderr.getvalue().strip().splitlines()[-1]


# -- one way to hold a guest still

@pytest.mark.parametrize('argv, refused', [
    (['vm', 'create', '-vm', '100', '-pause', '-suspend'], '-suspend/--suspend: not allowed with argument -pause/--pause'),
    (['vm', 'create', '-vm', '100', '-freeze', '-pause'], '-pause/--pause: not allowed with argument -freeze/--freeze'),
    (['storage', 'create', '-storage', 'A', '-freeze', '-pause'],
     '-pause/--pause: not allowed with argument -freeze/--freeze'),
    (['storage', 'create', '-storage', 'A', '-paus'], 'unrecognized arguments: -paus'),
])
def test_parser_takes_one_way_to_hold_a_guest_still(argv, refused):
    code, line = parse(*argv)
    assert code == 2 and line.endswith(refused)


def test_parser_knows_pause_for_vm_and_storage_create():
    assert parse('vm', 'create', '-vm', '100', '--pause').pause is True
    storage = parse('storage', 'create', '-storage', 'A', '-pause')
    assert (storage.pause, storage.freeze) == (True, False)


# -- repeated options

@pytest.mark.parametrize('argv, vms', [
    (['-vm', '100', '-vm', '101'], [100, 101]),
    (['-vm', '100', '101', '-vm', '102'], [100, 101, 102]),
    (['--vm', '100', '-vm', '101'], [100, 101]),
])
def test_parser_takes_every_vm_of_a_repeated_vm_option(argv, vms):
    assert parse('vm', 'create', *argv).vm == vms


@pytest.mark.parametrize('argv, option', [
    (['storage', 'list', '-storage', 'ONTAP01', '-storage', 'ONTAP02'], '-storage/--storage'),
    (['storage', 'list', '-storage', 'ONTAP01', '--storage=ONTAP02'], '-storage/--storage'),
    (['storage', 'delete', '-storage', 'A', '-snapshot', OLD, '-snapshot', 'x'], '-snapshot/--snapshot'),
    (['storage', 'create', '-storage', 'A', '-keep', '3', '-keep', '7'], '-keep/--keep'),
    (['vm', 'create', '-vm', '100', '-keep', '3', '-keep', '7'], '-keep/--keep'),
    (['storage', 'mount', '-storage', 'A', '-snapshot', OLD, '-name', 'BB', '-name', 'CC'], '-name/--name'),
    (['vm', 'list', '-vm', '100', '-vm', '101'], '-vm/--vm'),
    (['vm', 'delete', '-vm', '100', '-vm', '101', '-snapshot', STAMP], '-vm/--vm'),
    (['vm', 'restore', '-vm', '100', '-storage-snapshot', OLD, '-storage-snapshot', 'x'],
     '-storage-snapshot/--storage-snapshot'),
    (['-config', 'a.ini', '-config', 'b.ini', 'storage', 'list', '-storage', 'A'], '-config/--config'),
    (['storage', 'list', '-storage', 'A', '-loglevel', 'warn', '-loglevel', 'debug'], '-loglevel/--loglevel'),
    (['-output', 'json', 'storage', 'list', '-storage', 'A', '-output', 'text'], '-output/--output'),
    (['-wait', '10', 'storage', 'create', '-storage', 'A', '--wait', '10'], '-wait/--wait'),
    (['-config', 'a.ini', 'storage', 'list', '-storage', 'A', '-config', 'b.ini'], '-config/--config'),
])
def test_parser_refuses_a_value_option_given_twice(argv, option):
    code, line = parse(*argv)
    assert code == 2
    assert f'error: argument {option}: given' in line and 'give it once' in line


def test_parser_takes_a_global_option_after_the_command_and_a_repeated_flag():
    args = parse('storage', 'restore', '-storage', 'A', '-snapshot', OLD, '-config', 'b.ini', '-yes', '-yes',
                 '-dry-run', '--dry-run')
    assert (args.config, args.yes, args.dry_run) == ('b.ini', True, True)
    assert parse('-dry-run', 'storage', 'list', '-storage', 'A', '-dry-run').dry_run is True


def test_admin_snapshots_both_vms_given_as_two_vm_options(world):
    result = world.run('vm', 'create', '-vm', 100, '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    assert len(world.clones(world.vol1, 100)) == 4
    assert len(world.clones(world.vol1, 101)) == 1


def test_a_second_storage_option_is_refused_rather_than_snapshotting_the_last(world):
    line = world.usage_error('storage', 'create', '-storage', 'ONTAP01', '-storage', 'ONTAP02')

    assert line.endswith('error: argument -storage/--storage: given twice: give it once')
    assert not world.vol1.snapshots and not world.vol2.snapshots


def test_a_config_given_before_and_after_the_command_is_refused(world, tmp_path):
    other = tmp_path / 'other.ini'
    other.write_text(world.config.read_text())

    line = world.usage_error('storage', 'create', '-storage', 'ONTAP01', '-config', other)

    assert line.endswith('error: argument -config/--config: given before and after the command: give it once')


# -- abbreviations

@pytest.mark.parametrize('argv, abbreviation', [
    (['storage', 'restore', '-storage', 'A', '-snapshot', OLD, '-f'], '-f'),
    (['storage', 'restore', '-storage', 'A', '-snapshot', OLD, '-y'], '-y'),
    (['storage', 'unmount', '-storage', 'A-CLONE', '-for'], '-for'),
    (['-dry', 'storage', 'list', '-storage', 'A'], '-dry'),
    (['storage', 'list', '-storage', 'A', '-dry'], '-dry'),
    (['vm', 'create', '-vm', '100', '-sus'], '-sus'),
    (['vm', 'create', '-vm', '100', '-no-reg'], '-no-reg'),
    (['vm', 'restore', '-vm', '100', '-storage-snap', OLD], '-storage-snap'),
    (['storage', 'list', '-sto', 'A'], '-sto'),
    (['storage', 'list', '-storage', 'A', '-sto=B'], '-sto=B'),
    (['storage', 'list', '-storage', 'A', '-conf', 'x.ini'], '-conf'),
    (['storage', 'list', '--stor', 'A'], '--stor'),
])
def test_parser_refuses_every_abbreviation(argv, abbreviation):
    code, line = parse(*argv)
    assert code == 2
    assert abbreviation in line


def test_parser_takes_options_spelt_in_full_with_one_or_two_dashes_and_with_equals():
    args = parse('storage', 'restore', '--storage=ONTAP01', '-snapshot=' + OLD, '--force', '-yes')
    assert (args.storage, args.snapshot, args.force, args.yes) == ('ONTAP01', OLD, True, True)


def test_f_is_not_force_so_a_running_vm_stops_the_storage_restore(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    assert world.pve.vm(100).status == 'running'

    line = world.usage_error('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD, '-yes', '-f')

    assert line.endswith('error: unrecognized arguments: -f')
    assert not world.ontap_requests('PATCH')


# -- ids, counts and seconds

ARABIC_100 = '\u0661\u0660\u0660'    # what int() and \d take for 100


@pytest.mark.parametrize('argv', [
    ['vm', 'list', '-vm', ARABIC_100],
    ['vm', 'create', '-vm', '100', ARABIC_100],
    ['vm', 'list', '-vm', '100\n'],
    ['vm', 'list', '-vm', '99'],
    ['vm', 'create', '-vm', '100', '-keep', '\u0663'],
    ['vm', 'create', '-vm', '100', '-keep', '0'],
    ['storage', 'create', '-storage', 'A', '-keep', '+3'],
    ['vm', 'delete', '-vm', '100', '-snapshot', STAMP.replace('1', '\u0661')],
])
def test_parser_takes_ids_and_counts_in_ascii_digits_only(argv):
    code, line = parse(*argv)
    assert code == 2
    assert 'is no VM id' in line or '-keep takes a whole number' in line or 'is no VM snapshot stamp' in line


@pytest.mark.parametrize('text', ['inf', 'nan', '-1', '1e3', '\u0661', '5 ', '', '1_000', '9' * 400])
def test_parser_refuses_wait_seconds_that_are_no_plain_number(text):
    code, line = parse('-wait', text, 'storage', 'create', '-storage', 'A')
    assert code == 2
    assert line.endswith(f'error: argument -wait/--wait: {text!r} is no number of seconds (like 600 or 0.5)')


@pytest.mark.parametrize('text, value', [('0', 0), ('600', 600), ('0.5', 0.5), ('.5', 0.5), ('10.', 10)])
def test_parser_takes_wait_seconds(text, value):
    assert parse('storage', 'create', '-storage', 'A', '-wait', text).wait == value


def test_a_vm_id_in_arabic_indic_digits_snapshots_nothing(world):
    line = world.usage_error('vm', 'create', '-vm', '\u0661\u0660\u0661')

    assert line.endswith("argument -vm/--vm: '\u0661\u0660\u0661' is no VM id (a number from 100 to 999999999)")
    assert not world.clones(world.vol1, 101)


def test_an_endless_wait_is_refused_before_the_storage_is_snapshotted(world):
    line = world.usage_error('-wait', 'inf', 'storage', 'create', '-storage', 'ONTAP01')

    assert line.endswith("argument -wait/--wait: 'inf' is no number of seconds (like 600 or 0.5)")
    assert not world.vol1.snapshots


# -- a mount id

def test_parser_refuses_a_mount_named_like_a_config_section_of_its_own():
    code, line = parse('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD, '-name', 'proxmox')
    assert code == 2 and "'proxmox' is no storage" in line


# -- a value that begins with a dash

@pytest.mark.parametrize('argv, line', [
    (('storage', 'create', '-storage', 'ONTAP01', '-min-age', '-1h'),
     "argument -min-age/--min-age: '-1h' is no duration (like 90s, 30m, 1h, 2d, 1w)"),
    (('storage', 'create', '-storage', 'ONTAP01', '-keep', '-3'),
     "argument -keep/--keep: '-3': -keep takes a whole number from 1"),
    (('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', 'x', '-name', '-x'),
     "argument -name/--name: '-x' is no PVE storage id"),
])
def test_a_value_that_begins_with_a_dash_is_said_to_be_wrong_not_missing(world, argv, line):
    assert line in world.usage_error(*argv)


# -- -loglevel

@pytest.mark.parametrize('argv', [('vm', 'create', '-vm', 100, '-suspend', '-keep', 2),
                                  ('storage', 'create', '-storage', 'ONTAP01', '-keep', 2),
                                  ('vm', 'create', '-vm', 101, '-freeze')])
def test_a_successful_run_at_loglevel_warn_is_silent(world, argv):
    world.pve.vm(100).config.pop('scsi1')   # a disk on local-lvm is rightly warned about
    db = world.with_agent(101)
    db.status = db.qmpstatus = 'running'

    result = world.run('-loglevel', 'warn', *argv)
    assert result.code == 0
    assert (result.out, result.err) == ('', '')


# -- usage errors

def test_usage_errors_exit_2(world):
    assert world.usage_error('vm', 'create', '-vm', 'abc').endswith("argument -vm/--vm: 'abc' is no VM id (a number "
                                                                     'from 100 to 999999999)')
    assert world.usage_error('vm', 'create', '-vm', 100, '-suspend', '-shutdown').endswith(
        'argument -shutdown/--shutdown: not allowed with argument -suspend/--suspend')


# -- -dry-run

DRY_RUNS = [
    ('vm', 'create', '-vm', 100, '-suspend', '-keep', 1),
    ('vm', 'restore', '-vm', 101, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('vm', 'delete', '-vm', 101, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('storage', 'create', '-storage', 'ONTAP01', '-keep', 1),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD),
    ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD),
]


@pytest.mark.parametrize('argv', DRY_RUNS, ids=lambda argv: ' '.join(map(str, argv[:2])))
def test_dry_run_prints_the_plan_and_changes_nothing(world, argv):
    world.add_storage_snapshots()
    old_set = world.disk(world.vol1, 101, 'vm-101-disk-0-snapshot-2024-03-11_10:00:00+0000.raw')
    old_set.write_bytes(b'an old VM snapshot')
    world.pve.vm(100).status = 'stopped' if argv[1] == 'restore' else 'running'
    before = world.state()

    result = world.run('-dry-run', *argv)

    assert result.code == 0, result.err
    assert 'INFO' not in result.err
    planned = [line for line in result.out.splitlines() if line.startswith('would ')]
    assert planned, result.out
    assert world.state() == before
    assert not world.ontap_changes()
    assert not world.pve_changes()


def test_dry_run_with_keep_shows_what_retention_would_delete(world):
    world.add_storage_snapshots()
    old_set = world.disk(world.vol1, 101, 'vm-101-disk-0-snapshot-2024-03-11_10:00:00+0000.raw')
    old_set.write_bytes(b'an old VM snapshot')
    before = world.state()

    vm = world.run('-dry-run', 'vm', 'create', '-vm', 101, '-keep', 1, '-no-register')
    storage = world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01', '-keep', 2)

    assert vm.code == 0 and storage.code == 0, vm.err + storage.err
    assert f'would delete images/101/{old_set.name} in volume proxmox_storage01' in vm.out
    deleted = [line for line in storage.out.splitlines() if line.startswith('would delete snapshot')]
    assert deleted == [f'would delete snapshot {OLD} of volume proxmox_storage01 (ONTAP {world.a.host})']
    assert world.state() == before
