"""The man page pve-ontap-snapshot(8), made at build time from the tool's own parser, so that
it says what --help says (every command, option and example) and cannot drift from it:

    python3 packaging/manpage.py [TOOL_DIR] > pve-ontap-snapshot.8

The description is the module docstring (the parser's description); the version is the
tool's (pyproject.toml); the date is SOURCE_DATE_EPOCH's (dpkg-buildpackage sets it from
debian/changelog), else today's.
"""

import argparse
import datetime
import os
import re
import sys

# What the package puts where: its files, not the parser's.
FILES = {
    '/etc/pve-ontap-snapshot/config.ini': (
        'The configuration, when no -config FILE is given and there is no ./config.ini (mode 600: it holds '
        'passwords). The package never ships or changes it.'),
    '/usr/share/doc/pve-ontap-snapshot/config.ini.example': 'A commented example to start config.ini from.',
    '/usr/lib/systemd/system/pve-ontap-snapshot-storage@.service': (
        'A storage snapshot of the storage that names the instance, keeping the newest KEEP (7).'),
    '/usr/lib/systemd/system/pve-ontap-snapshot-storage@.timer': (
        'Starts that service nightly: systemctl enable --now pve-ontap-snapshot-storage@ONTAP01.timer.'),
    '/etc/pve-ontap-snapshot/STORAGE.env': "KEEP, MIN_AGE and OPTIONS of that storage's service, if present.",
    '/usr/share/doc/pve-ontap-snapshot/README.md.gz': (
        'The whole manual: install, config.ini, each command, locks, scheduled snapshots, least privilege.'),
}
SEE_ALSO = r'\fBsystemctl\fR(1), \fBsystemd.timer\fR(5), \fBsystemd.exec\fR(5)'


def roff(text):
    """Text as roff sees it literally: backslashes, minus signs, a leading dot or quote."""
    text = text.replace('\\', r'\e').replace('-', r'\-')
    return re.sub(r"^([.'])", r'\\&\1', text, flags=re.MULTILINE)


def bold(text):
    return rf'\fB{roff(text)}\fR'


def docstring_body(text):
    """Roff for a docstring's paragraphs: plain lines filled, lines indented by two or more
    spaces kept as they are (the command list, the examples)."""
    out = []
    for paragraph in text.strip().split('\n\n'):
        out.append('.PP')
        verbatim = False
        for line in paragraph.splitlines():
            indented = line.startswith('  ')
            if indented != verbatim:
                out += ['.RS 2', '.nf'] if indented else ['.fi', '.RE']
                verbatim = indented
            out.append(roff(line[2:] if indented else line))
        if verbatim:
            out += ['.fi', '.RE']
    return out


def option_term(action, formatter):
    """`-storage, --storage ID` in roff."""
    flags = ', '.join(bold(flag) for flag in action.option_strings)
    if action.nargs == 0:
        return flags
    return rf'{flags} \fI{roff(formatter._format_args(action, action.dest.upper()))}\fR'


def options(actions, formatter):
    out = []
    for action in actions:
        out += ['.TP', option_term(action, formatter), roff(formatter._expand_help(action))]
    return out


def own_actions(parser, global_flags):
    """A command's options without the global ones it accepts too, and without -h."""
    return [action for action in parser._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)
            and tuple(action.option_strings) not in global_flags]


def synopsis_line(words, actions, groups, formatter):
    """`pve-ontap-snapshot [global options] vm create (-vm ID [ID ...] | -all) ...`, breaking
    only between options."""
    depth, text = 0, ''
    for char in formatter._format_actions_usage(actions, groups):
        if char in '[(':
            depth += 1
        elif char in '])':
            depth -= 1
        text += '\x00' if char == ' ' and depth else char    # a blank inside brackets: no break there
    return ['.PP', rf'{bold("pve-ontap-snapshot")} [\fIglobal options\fR] {bold(words)} '
            + roff(text).replace('\x00', r'\ ')]


def leaves(parser, words=()):
    """(command words, parser) of each command that runs something, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    yield from leaves(child, words + (name,))
                else:
                    yield ' '.join(words + (name,)), child


def build_date():
    epoch = os.environ.get('SOURCE_DATE_EPOCH')
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch else datetime.datetime.now(datetime.UTC)
    return when.strftime('%Y-%m-%d')


def manpage(tool):
    parser = tool.build_parser()
    formatter = parser._get_formatter()
    title, _, body = parser.description.partition('\n')
    global_actions = [a for a in parser._actions if a.option_strings]
    global_flags = {tuple(a.option_strings) for a in global_actions}
    commands = list(leaves(parser))
    name, _, summary = title.rstrip('.').partition(': ')

    header = f'.TH {roff("PVE-ONTAP-SNAPSHOT")} 8 "{build_date()}" "{roff("pve-ontap-snapshot " + tool.tool_version())}"'
    out = [rf'.\" Generated by packaging/manpage.py from {tool.__name__}.build_parser(): do not edit.',
           header + ' "System Administration"',
           '.\\" No hyphenation and a ragged right: option names stay whole, as they are typed.',
           '.nh', '.ad l',
           '.SH NAME', rf'{roff(name)} \- {roff(summary)}',
           '.SH SYNOPSIS']
    for words, command in commands:
        out += synopsis_line(words, own_actions(command, global_flags), command._mutually_exclusive_groups, formatter)
    out += ['.PP', rf'{bold("pve-ontap-snapshot")} {bold("-version")}', '.br',
            rf'{bold("pve-ontap-snapshot")} [\fIcommand\fR] {bold("-h")}',
            '.SH DESCRIPTION'] + docstring_body(body)
    out += ['.SH GLOBAL OPTIONS', 'Accepted before and after the command.'] + options(global_actions, formatter)
    out.append('.SH COMMANDS')
    for words, command in commands:
        out += ['.SS ' + f'"{roff(words)}"', '.PP', roff(command.description)]
        out += synopsis_line(words, own_actions(command, global_flags), command._mutually_exclusive_groups,
                             formatter)
        out += options(own_actions(command, global_flags), formatter)
        if command.epilog:
            out += docstring_body(command.epilog)
    out.append('.SH FILES')
    for path, meaning in FILES.items():
        out += ['.TP', bold(path), roff(meaning)]
    out += ['.SH SEE ALSO', SEE_ALSO]
    return '\n'.join(out) + '\n'


def main(argv):
    if len(argv) > 1:
        sys.exit('usage: manpage.py [TOOL_DIR]')
    sys.path.insert(0, argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    import pve_ontap_snapshot
    sys.stdout.write(manpage(pve_ontap_snapshot))


if __name__ == '__main__':
    main(sys.argv[1:])
