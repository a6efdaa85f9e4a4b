"""The Debian package as a PVE node has it: built by packaging/build-deb, installed with apt,
run by Debian's python3 with Debian's python3-proxmoxer, -requests, -urllib3 and
-argcomplete. .ci/run installs it and runs these with PVE_ONTAP_SNAPSHOT_INSTALLED=1;
without that they are skipped.

The test world (fakepve and the ONTAP emulators) runs here, in the tests' own Python; the
command runs as installed, /usr/sbin/pve-ontap-snapshot by its own #! line, in an
environment without the tests' Python settings, so nothing of theirs reaches it.

The node is this machine, or with PVE_ONTAP_SNAPSHOT_CHROOT=DIR the Debian installed in the
chroot DIR (.ci/run: Debian 13, as PVE 9 has it): every command that runs the tool or looks at
the installation (dpkg, python3, bash, man, systemd-analyze) runs in it, and its files are read
under DIR. It shares this machine's network, so the world on 127.0.0.1 serves it too; the
world's files (config.ini, CA files, locks) are in pytest's temporary directories, which must
be seen at the same path in the chroot (.ci/run mounts them there)."""

import json
import os
import pty
import select
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from test_completion import NEVER_IMPORTED, answers
from test_packaging import (
    MailWorld,
    as_on_failure,
    check_the_failure_mail,
    check_the_monitor_service,
    check_the_timers_service,
    leaf_commands,
    metadata,
    unit_settings,
)

import pve_ontap_snapshot as tool

pytestmark = pytest.mark.skipif(not os.environ.get('PVE_ONTAP_SNAPSHOT_INSTALLED'),
                                reason='the installed package is tested by .ci/run (PVE_ONTAP_SNAPSHOT_INSTALLED=1)')
CHROOT = os.environ.get('PVE_ONTAP_SNAPSHOT_CHROOT', '')

COMMAND = '/usr/sbin/pve-ontap-snapshot'
COMPLETION = '/usr/share/bash-completion/completions/pve-ontap-snapshot'
MAN_PAGE = '/usr/share/man/man8/pve-ontap-snapshot.8.gz'
UNITS = '/usr/lib/systemd/system/pve-ontap-snapshot-storage@'
MONITOR_UNITS = '/usr/lib/systemd/system/pve-ontap-snapshot-monitor'
FAILURE_UNIT = '/usr/lib/systemd/system/pve-ontap-snapshot-failure@.service'
TMPFILES = '/usr/lib/tmpfiles.d/pve-ontap-snapshot.conf'
LOCK_DIR = '/run/lock/pve-ontap-snapshot'
VERSION = tomllib.loads((Path(__file__).resolve().parent.parent / 'pyproject.toml').read_text())['project']['version']
# Each module the command imports, and the Debian package it must come from.
FROM_DEBIAN = {'pve_ontap_snapshot': 'pve-ontap-snapshot', 'proxmoxer': 'python3-proxmoxer',
               'requests': 'python3-requests', 'urllib3': 'python3-urllib3', 'argcomplete': 'python3-argcomplete'}


def on_node(path):
    """The node's file `path`, as seen from here."""
    return Path(CHROOT + str(path))


def node_argv(argv, cwd=None):
    """`argv` as run on the node: here as it is; in the chroot, in `cwd` (seen there at the same
    path; else /). chroot(1) would always start in /: unshare --root chroots, --wd then goes to cwd."""
    argv = [str(a) for a in argv]
    return ['unshare', f'--root={CHROOT}', f'--wd={cwd or "/"}', *argv] if CHROOT else argv


def node_env(**extra):
    """The environment of an admin's shell: the tests' own, less every Python setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTHON') and k != 'VIRTUAL_ENV'}
    return dict(env, **extra)


def run(*argv, cwd=None, env=None):
    """A command on the node, as an admin's shell runs it."""
    return subprocess.run(node_argv(argv, cwd), capture_output=True, text=True, timeout=120, check=False,
                          cwd=cwd, env=env or node_env())


def installed(world, *argv):
    """The installed command, as an admin types it, with the world's config."""
    return run(COMMAND, '-config', world.config, *argv)


def owner(path):
    """The Debian package that installed `path` (dpkg -S), or None."""
    result = run('dpkg', '-S', path)
    return result.stdout.split(':')[0] if result.returncode == 0 else None


# -- what the package installs

def test_the_command_runs_on_debians_python3_with_debians_packages():
    assert on_node(COMMAND).read_text().splitlines()[0] == '#!/usr/bin/python3'
    modules = ', '.join(FROM_DEBIAN)
    # Each module's file, and the byte-code file of the tool for this python3
    # (cpython-311 on Debian 12, cpython-313 on Debian 13).
    code = f'import importlib.util, json, {modules}; print(json.dumps([{{m.__name__: m.__file__ for m in ' \
           f'({modules})}}, importlib.util.cache_from_source(pve_ontap_snapshot.__file__)]))'

    files, compiled = json.loads(run('/usr/bin/python3', '-c', code, cwd='/').stdout)     # not the clone's module

    assert {module: owner(path) for module, path in files.items()} == FROM_DEBIAN
    module = Path(files['pve_ontap_snapshot'])
    assert module.parent == Path('/usr/lib/python3/dist-packages')
    assert Path(compiled).parent == module.parent / '__pycache__'
    assert on_node(compiled).exists() and owner(compiled) is None       # byte-compiled at install, by py3compile


def test_the_package_depends_on_debians_packages_and_leaves_config_ini_to_the_admin():
    depends = run('dpkg-query', '-W', '-f', '${Depends}', 'pve-ontap-snapshot').stdout.split(', ')
    assert {'python3 (>= 3.11)', 'python3-proxmoxer', 'python3-requests', 'python3-urllib3',
            'python3-argcomplete'} <= set(depends)
    files = run('dpkg', '-L', 'pve-ontap-snapshot').stdout.splitlines()
    assert not [f for f in files if f.startswith('/etc/')]
    assert '/usr/share/doc/pve-ontap-snapshot/config.ini.example' in files
    assert on_node('/etc/pve-ontap-snapshot').stat().st_mode & 0o777 == 0o700


def test_the_lock_directory_is_roots_alone_made_as_at_boot():
    lock_dir = on_node(LOCK_DIR)
    assert lock_dir.is_dir() and not lock_dir.is_symlink()
    info = lock_dir.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o700)
    assert owner(TMPFILES) == 'pve-ontap-snapshot'
    entries = [line.split() for line in on_node(TMPFILES).read_text().splitlines() if line and not line.startswith('#')]
    assert entries == [['d', LOCK_DIR, '0700', 'root', 'root', '-']]


def test_version_is_pyprojects_in_the_command_and_the_package():
    result = run(COMMAND, '--version')
    assert (result.returncode, result.stdout) == (0, f'pve-ontap-snapshot {VERSION}\n')
    assert run('dpkg-query', '-W', '-f', '${Version}', 'pve-ontap-snapshot').stdout == metadata.debian_version(VERSION)


# -- each command's happy path, through the installed command

def test_doctor_finds_the_setup_healthy(world):
    result = installed(world, 'doctor')
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].endswith(' ok, 0 warn, 0 fail')


def test_a_vm_snapshot_is_made_listed_restored_and_deleted(world):
    disk = world.disk(world.vol1, 101, 'vm-101-disk-0.raw')
    before = disk.read_bytes()

    assert installed(world, 'vm', 'create', '-vm', 101).returncode == 0
    listed = installed(world, '-output', 'json', 'vm', 'list', '-vm', 101)
    (snapshot,) = json.loads(listed.stdout)
    disk.write_bytes(b'changed since')
    restored = installed(world, 'vm', 'restore', '-vm', 101, '-snapshot', snapshot['stamp'], '-yes')
    assert restored.returncode == 0, restored.stderr
    assert disk.read_bytes() == before
    deleted = installed(world, 'vm', 'delete', '-vm', 101, '-snapshot', snapshot['stamp'])

    assert deleted.returncode == 0, deleted.stderr
    assert not [f for f in world.files(world.vol1, 101) if f'-snapshot-{snapshot["stamp"]}' in f]
    assert [s['kind'] for s in json.loads(installed(world, '-output', 'json', 'vm', 'list', '-vm', 101).stdout)] \
        == ['pre-restore']


def test_a_storage_snapshot_is_made_listed_shown_mounted_restored_and_deleted(world):
    assert installed(world, 'storage', 'create', '-storage', 'ONTAP01').returncode == 0
    (name,) = [s['name'] for s in json.loads(installed(world, '-output', 'json', 'storage', 'list', '-storage',
                                                        'ONTAP01').stdout)]
    shown = json.loads(installed(world, '-output', 'json', 'storage', 'show', '-storage', 'ONTAP01').stdout)
    assert shown['name'] == 'proxmox_storage01'

    assert installed(world, 'storage', 'mount', '-storage', 'ONTAP01', '-snapshot', name).returncode == 0
    assert 'ONTAP01-CLONE' in world.pve.storages and world.a.volume('proxmox_storage01_clone')
    assert installed(world, 'storage', 'unmount', '-storage', 'ONTAP01-CLONE').returncode == 0
    assert 'ONTAP01-CLONE' not in world.pve.storages and not world.a.volume('proxmox_storage01_clone')

    disk = world.disk(world.vol1, 101, 'vm-101-disk-0.raw')
    before = disk.read_bytes()
    disk.write_bytes(b'changed since')
    restored = installed(world, 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', name, '-force', '-yes')
    assert restored.returncode == 0, restored.stderr
    assert disk.read_bytes() == before
    assert installed(world, 'storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name).returncode == 0
    assert name not in world.vol1.snapshots


def test_the_timers_service_as_installed_snapshots_its_storage(world):
    check_the_timers_service(world, node_argv([COMMAND]), on_node(UNITS + '.service').read_text())


def test_the_monitor_service_as_installed_writes_the_metrics(world, tmp_path):
    textfile = tmp_path / 'node-exporter'       # seen at the same path on the node
    textfile.mkdir(mode=0o755)
    check_the_monitor_service(world, node_argv([COMMAND]), on_node(MONITOR_UNITS + '.service').read_text(), textfile)


def with_programs_of(mail, argv, sendmail=True):
    """`argv` run on the node in a mount namespace of its own where the node's journalctl and
    systemctl are MailWorld's fakes (bound over them: no journald or systemd runs in CI) and
    /usr/sbin an empty tmpfs, with MailWorld's sendmail in it if `sendmail`; the node itself is
    left as it was."""
    setup = ('mount --bind "$1" "$R/usr/bin/journalctl" && mount --bind "$2" "$R/usr/bin/systemctl" && '
             'mount -t tmpfs -o mode=755 tmpfs "$R/usr/sbin" && { [ -z "$3" ] || cp "$3" "$R/usr/sbin/sendmail"; } && '
             'shift 3 && exec "$@"')
    return ['unshare', '--mount', '--propagation', 'private', 'env', f'R={CHROOT}', 'sh', '-c', setup, 'sh',
            mail.dir / 'journalctl', mail.dir / 'systemctl', mail.dir / 'sendmail' if sendmail else '',
            *node_argv(argv)]


@pytest.mark.skipif(os.geteuid() != 0, reason='the fakes are bound over the node\'s programs in a mount namespace, as root')
def test_the_failure_unit_as_installed_mails_root_the_failed_runs_journal_lines(tmp_path):
    """The failure unit's command, as the installed unit names it for a failed storage service,
    run as systemd would (its $MONITOR_* variables), against fakes of journalctl, systemctl and
    sendmail: no journald runs in CI, so the journal lines are the fake's."""
    mail = MailWorld(tmp_path / 'mail')
    (exec_start,) = unit_settings(on_node(FAILURE_UNIT).read_text())['ExecStart']
    argv = exec_start.replace('%i', mail.UNIT).split()
    assert argv == ['/usr/libexec/pve-ontap-snapshot/mail-failure', mail.UNIT]
    assert owner(argv[0]) == 'pve-ontap-snapshot'

    mailed = subprocess.run([str(a) for a in with_programs_of(mail, argv)], capture_output=True, text=True,
                            timeout=60, check=False, env=as_on_failure())
    check_the_failure_mail(mail, mailed)
    mail.mail.unlink()
    unmailed = subprocess.run([str(a) for a in with_programs_of(mail, argv, sendmail=False)], capture_output=True,
                              text=True, timeout=60, check=False, env=as_on_failure())

    assert unmailed.returncode == 1 and not mail.mail.exists()
    assert unmailed.stderr.startswith(f'no /usr/sbin/sendmail: the failure of {mail.UNIT} on ')
    assert unmailed.stderr.count('\n') == 1


# -- completion, man page, units

class LoginShell:
    """bash --login -i on a pseudo-terminal, as an admin's new shell: /etc/profile loads
    bash-completion, which loads the installed completion file on the first <TAB>."""

    def __init__(self, home):
        self.master, slave = pty.openpty()
        env = node_env(HOME=str(home), TERM='dumb', PATH='/usr/sbin:/usr/bin:/sbin:/bin')
        self.process = subprocess.Popen(node_argv(['bash', '--login', '-i'], home), stdin=slave, stdout=slave,
                                        stderr=slave, cwd=home, env=env, start_new_session=True)
        os.close(slave)

    def read_until(self, text, seconds=30):
        seen, deadline = '', time.monotonic() + seconds
        while text not in seen and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                seen += os.read(self.master, 65536).decode(errors='replace')
        return seen

    def complete(self, keys):
        """The command line as bash leaves it after typing `keys` (<TAB>s in them): then
        Ctrl-A and `echo ` before it, so bash prints it (less a trailing blank)."""
        os.write(self.master, keys.encode() + b'\x01echo COMPLETED: \r')
        seen = self.read_until('\nCOMPLETED: ')
        seen += self.read_until('\n', 5)
        return seen.split('\nCOMPLETED: ', 1)[1].split('\r')[0]

    def close(self):
        os.write(self.master, b'\x15exit\r')
        self.process.wait(10)
        os.close(self.master)


def test_completion_works_in_a_new_login_shell(tmp_path):
    config = tmp_path / 'prod.ini'
    config.write_text('[proxmox]\n[ONTAP01]\n[ONTAP02]\n')
    shell = LoginShell(tmp_path)
    try:
        assert shell.complete(f'pve-ontap-snapshot -config {config} storage li\t-storage ONTAP02-\t') \
            == f'pve-ontap-snapshot -config {config} storage list -storage ONTAP02-CLONE'
        assert shell.complete('pve-ontap-snapshot vm cr\t-vm 100 -sus\t') \
            == 'pve-ontap-snapshot vm create -vm 100 -suspend'
    finally:
        shell.close()


def test_a_tab_imports_neither_the_tool_nor_what_only_a_run_needs(tmp_path):
    (tmp_path / 'config.ini').write_text('[proxmox]\n[ONTAP01]\n[ONTAP02]\n')
    completions, imported = answers(node_argv([COMMAND], tmp_path), 'pve-ontap-snapshot storage list -storage ONTAP0',
                                    tmp_path)
    assert completions == ['ONTAP01', 'ONTAP01-CLONE', 'ONTAP02', 'ONTAP02-CLONE']
    assert 'argcomplete' in imported and not imported & NEVER_IMPORTED


def test_the_man_page_renders_and_says_what_help_says():
    assert run('man', '-w', 'pve-ontap-snapshot').stdout.strip() == MAN_PAGE
    # As lintian checks a man page:
    check = run('man', '--warnings', '-E', 'UTF-8', '-l', '-Tutf8', '-Z', MAN_PAGE, env=node_env(LC_ALL='C.UTF-8'))
    assert (check.returncode, check.stderr) == (0, '')

    page = run('man', '-l', MAN_PAGE, env=node_env(LC_ALL='C.UTF-8', MANWIDTH='100', MANPAGER='cat')).stdout

    assert f'pve-ontap-snapshot {VERSION}' in page.splitlines()[-1]
    for words, command in leaf_commands(tool.build_parser()):
        help_text = run(COMMAND, *words.split(), '--help').stdout
        assert command.description in help_text and ' '.join(command.description.split()[:4]) in page
        for action in command._actions:
            for flag in action.option_strings:
                assert flag in help_text and flag in page


def test_systemd_accepts_the_units():
    for units in ([UNITS + '.service', UNITS + '.timer', MONITOR_UNITS + '.service', MONITOR_UNITS + '.timer',
                   FAILURE_UNIT],
                  ['pve-ontap-snapshot-storage@ONTAP01.service', 'pve-ontap-snapshot-storage@ONTAP01.timer',
                   'pve-ontap-snapshot-monitor.service', 'pve-ontap-snapshot-monitor.timer',
                   'pve-ontap-snapshot-failure@pve-ontap-snapshot-storage@ONTAP01.service.service']):
        result = run('systemd-analyze', 'verify', *units)
        assert (result.returncode, result.stdout, result.stderr) == (0, '', '')
