"""Tab completion: as the script answers it (argcomplete over the tool's own parser, without its
HTTP stack), and as the Debian package answers it: from the tool's parser and completers, saved at
build time by packaging/save_parser.py, without importing the tool. Each answer of the package must
be the tool's own, for every kind of word a <TAB> can meet."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / 'packaging'
SCRIPT = ROOT / 'pve_ontap_snapshot.py'
# What a <TAB> from the saved parser must never import: the tool, its HTTP stack, and the
# standard library that only a run needs (dataclasses and logging cost as much as argcomplete).
NEVER_IMPORTED = {'pve_ontap_snapshot', 'requests', 'urllib3', 'proxmoxer', 'dataclasses', 'logging', 'concurrent',
                  'json', 'socket', 'tempfile'}
# What a <TAB> answered by the script itself must never import.
HTTP_STACK = {'requests', 'urllib3', 'proxmoxer'}


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """The directory of saved_parser.py, made as the package build makes it."""
    directory = tmp_path_factory.mktemp('saved')
    with open(directory / 'saved_parser.py', 'w') as file:
        subprocess.run([sys.executable, PACKAGING / 'save_parser.py', ROOT], stdout=file, check=True)
    return directory


def answers(argv, line, cwd):
    """What `argv` answers to a <TAB> at the end of `line`, as bash asks argcomplete; and the
    top-level modules it imported for that."""
    out = cwd / 'answer'
    out.unlink(missing_ok=True)
    env = dict(os.environ, _ARGCOMPLETE='1', _ARGCOMPLETE_IFS='\n', COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=str(out), PYTHONPROFILEIMPORTTIME='1')
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    imported = {row.split('|')[-1].strip().split('.')[0] for row in result.stderr.splitlines()
                if row.startswith('import time:')}
    return sorted(out.read_text().split('\n') if out.exists() else []), imported


def from_saved_parser(saved):
    """The launcher's completion branch, with the saved parser in `saved`."""
    return [sys.executable, '-c', 'import sys; sys.path[:0] = sys.argv[1:]; import completion; completion.complete()',
            str(saved), str(PACKAGING)]


# -- the script's own answers

def test_storage_completes_from_the_config_without_the_http_stack(world, tmp_path):
    completions, imported = answers([sys.executable, str(SCRIPT)],
                                    f'pve-ontap-snapshot -config {world.config} storage list -storage ONT', tmp_path)
    assert sorted(c.strip() for c in completions) == ['ONTAP01', 'ONTAP01-CLONE', 'ONTAP02', 'ONTAP02-CLONE']
    assert 'argcomplete' in imported
    assert not imported & HTTP_STACK


def test_subcommands_complete(tmp_path):
    completions, imported = answers([sys.executable, str(SCRIPT)], 'pve-ontap-snapshot storage mo', tmp_path)
    assert [c.strip() for c in completions] == ['mount']
    assert not imported & HTTP_STACK


def test_vm_ids_and_snapshots_complete_to_nothing_and_config_to_files(world, tmp_path):
    (tmp_path / 'config-prod.ini').write_text('')
    script = [sys.executable, str(SCRIPT)]
    assert answers(script, 'pve-ontap-snapshot vm create -vm ', tmp_path)[0] in ([], [''])
    assert answers(script, 'pve-ontap-snapshot storage delete -storage ONTAP01 -snapshot ', tmp_path)[0] in ([], [''])
    assert [c.strip() for c in answers(script, 'pve-ontap-snapshot -config config-p', tmp_path)[0]] == [
        'config-prod.ini']


# -- the package's answers, from the saved parser

CONFIG = '[proxmox]\nproxmox_host = pve\n\n[ONTAP01]\nhost = a\n\n[ONTAP02]\nhost = b\n\n[defaults]\n'
STORAGES = ['ONTAP01', 'ONTAP01-CLONE', 'ONTAP02', 'ONTAP02-CLONE']
# (what the admin typed before <TAB>, what must come back: [''] nothing; None: whatever the tool answers).
# {config} is a config.ini elsewhere; `here` lines run where ./config.ini is the config.
LINES = [
    ('pve-ontap-snapshot ', None),
    ('pve-ontap-snapshot -', None),
    ('pve-ontap-snapshot vm ', ['--help', '-h', 'create', 'delete', 'hold', 'list', 'release', 'restore', 'verify']),
    ('pve-ontap-snapshot vm re', ['release', 'restore']),
    ('pve-ontap-snapshot storage mo', ['mount ']),
    ('pve-ontap-snapshot storage ho', ['hold ']),
    ('pve-ontap-snapshot vm create -', None),
    ('pve-ontap-snapshot vm create -vm 100 -suspend -', None),
    ('pve-ontap-snapshot vm create -all -s', ['-shutdown', '-suspend']),
    ('pve-ontap-snapshot -config {config} storage list -storage ', STORAGES),
    ('pve-ontap-snapshot storage delete -config {config} -storage ONTAP02', ['ONTAP02', 'ONTAP02-CLONE']),
    ('pve-ontap-snapshot -config {config} doctor -storage ONTAP01-', ['ONTAP01-CLONE ']),
    ('here: pve-ontap-snapshot storage unmount -storage O', STORAGES),
    ('pve-ontap-snapshot storage mount -storage ONTAP01 -snapshot s -name ', ['']),
    ('pve-ontap-snapshot -config {config} storage verify -storage ONTAP0', STORAGES),
    ('pve-ontap-snapshot vm verify -vm 100 -s', ['-snapshot ']),
    ('pve-ontap-snapshot vm restore -vm 100 -snapshot ', ['']),
    ('pve-ontap-snapshot -loglevel w', ['warn', 'warning']),
    ('pve-ontap-snapshot -output j', ['json ']),
    ('pve-ontap-snapshot -config {dir}/conf', ['{dir}/config-prod.ini ']),
    ('pve-ontap-snapshot --ver', ['--version ']),
    ('pve-ontap-snapshot storage create -storage ONTAP01 -keep 7 -m', ['-min-age ']),
]


@pytest.mark.parametrize('typed, expected', LINES, ids=[typed for typed, _ in LINES])
def test_a_tab_from_the_saved_parser_answers_as_the_tool_does(saved, tmp_path, typed, expected):
    elsewhere, here = tmp_path / 'elsewhere', tmp_path / 'here'
    for directory in (elsewhere, here):
        directory.mkdir()
    (here / 'config.ini').write_text(CONFIG)
    (elsewhere / 'config-prod.ini').write_text(CONFIG)
    cwd = here if typed.startswith('here: ') else elsewhere
    line = typed.removeprefix('here: ').format(config=elsewhere / 'config-prod.ini', dir=elsewhere)

    tool, _ = answers([sys.executable, str(SCRIPT)], line, cwd)
    lean, imported = answers(from_saved_parser(saved), line, cwd)

    assert lean == tool
    if expected is not None:
        assert lean == sorted(e.format(dir=elsewhere) for e in expected)
    assert 'argcomplete' in imported
    assert not imported & NEVER_IMPORTED


def test_the_saved_parser_holds_every_command_and_option_of_the_tool(saved):
    """Nothing is left out when the parser is saved (a new command or option included)."""
    sys.path[:0] = [str(saved), str(PACKAGING)]
    try:
        import completion
        import saved_parser

        import pve_ontap_snapshot as tool
        rebuilt = completion.rebuild(saved_parser.TREE, saved_parser, ' '.join(saved_parser.TREE).split())
    finally:
        del sys.path[:2]
        sys.modules.pop('saved_parser', None)

    def flags(parser, path=''):
        found = {path: {flag for action in parser._actions for flag in action.option_strings}}
        for action in parser._actions:
            if isinstance(action.choices, dict):
                for name, child in action.choices.items():
                    found.update(flags(child, f'{path} {name}'.lstrip()))
        return found

    assert flags(rebuilt) == flags(tool.build_parser())
    assert len(flags(rebuilt)) == 30     # the tool, vm, ct, storage, and their 26 commands


def test_the_build_stops_at_a_completer_that_uses_what_cannot_be_copied(tmp_path, monkeypatch):
    (tmp_path / 'fake_tool.py').write_text(
        'import re\n\nSUFFIX = "-CLONE"\nPATTERN = re.compile("O")\n\n\n'
        'def with_suffix(name):\n    return name + SUFFIX\n\n\n'
        'def complete_ids(prefix, **kwargs):\n    return [with_suffix(prefix)]\n\n\n'
        'def complete_matches(prefix, **kwargs):\n    return [prefix] if PATTERN.match(prefix) else []\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PACKAGING))
    import fake_tool
    import save_parser

    imports, constants, sources = save_parser.copied_definitions(fake_tool, ['complete_ids'])
    assert (imports, constants, [s.split('(')[0] for s in sources]) == ({}, {'SUFFIX': '-CLONE'},
                                                                         ['def with_suffix', 'def complete_ids'])
    with pytest.raises(SystemExit, match="'PATTERN', which cannot be copied"):
        save_parser.copied_definitions(fake_tool, ['complete_matches'])
