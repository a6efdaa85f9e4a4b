"""Tab completion of the installed pve-ontap-snapshot, without importing the tool.

argcomplete answers a <TAB> by running the command with _ARGCOMPLETE set and asking its
argparse parser what may come next. Importing pve_ontap_snapshot for that costs more than
argparse and argcomplete together (the standard library a run needs, its dataclasses, its
4,000 lines), so the Debian package's launcher asks a copy instead: saved_parser.py, which
packaging/save_parser.py writes at build time with the tree of commands and options that
build_parser() makes, and the tool's completers. complete() rebuilds a parser from that
with plain argparse actions and hands it to argcomplete, so a <TAB> imports argparse,
argcomplete and what the completers import, and nothing else. tests/test_completion.py
checks that its answers are the tool's own.
"""

import argparse
import os

# What main() hands to argcomplete.autocomplete() besides the parser.
DEFAULT_COMPLETER = 'complete_nothing'


class SavedParser(argparse.ArgumentParser):
    """Parses as the tool's CommandLine does: no prefix matching of options."""

    def _get_option_tuples(self, option_string):
        return []

    def _get_formatter(self):
        # argparse makes a formatter for each option it adds, sized to the terminal (importing
        # shutil for that): help is never shown here, so one fixed width will do.
        return argparse.HelpFormatter(self.prog, width=80)


def complete():
    """Answer argcomplete's request from saved_parser (argcomplete then exits the process).
    Without argcomplete or the saved parser, return: the tool answers itself."""
    try:
        import argcomplete
        import saved_parser
    except ImportError:
        return
    words = {word.strip('\'"') for word in os.environ.get('COMP_LINE', '').split()}
    parser = rebuild(saved_parser.TREE, saved_parser, words)
    argcomplete.autocomplete(parser, default_completer=getattr(saved_parser, DEFAULT_COMPLETER))


def rebuild(tree, completers, words, path='', parser=None):
    """The argparse parser of the saved command `path` ('' the tool itself, 'vm create' a
    leaf): its actions in their order, completers by name, and its commands' parsers. Only
    the commands named among `words` (the line being completed) get their options: argparse
    never reaches the others, and argcomplete needs only their names."""
    node = tree[path]
    if parser is None:
        parser = SavedParser(prog=node['prog'], add_help=False, allow_abbrev=False)
    groups = [parser.add_mutually_exclusive_group(required=required) for required in node['groups']]
    for saved in node['actions']:
        if 'commands' in saved:
            commands = parser.add_subparsers(dest=saved['dest'], required=saved.get('required', False))
            for name in saved['commands']:
                child = f'{path} {name}'.lstrip()
                command = commands.add_parser(name, prog=tree[child]['prog'], add_help=False, allow_abbrev=False)
                if name in words:
                    rebuild(tree, completers, words, child, command)
            continue
        owner = groups[saved['group']] if 'group' in saved else parser
        if saved.get('nargs') == 0:
            kwargs = {'action': 'store_true'}
        else:
            kwargs = {'nargs': saved.get('nargs'), 'choices': saved.get('choices')}
        if saved['flags']:
            kwargs.update(dest=saved['dest'], required=saved.get('required', False))
        if saved.get('suppressed'):
            kwargs['help'] = argparse.SUPPRESS
        if saved.get('no_default'):
            kwargs['default'] = argparse.SUPPRESS
        action = owner.add_argument(*saved['flags'] or [saved['dest']], **kwargs)
        if 'completer' in saved:
            action.completer = getattr(completers, saved['completer'])
    return parser
