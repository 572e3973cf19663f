/*
 * admin/admin.c - squeezefs-admin: `squeezefs fsck`, `export`, `import`,
 * and the commands that talk to a mount (`stats`, `settle`,
 * `recompress`; admin.h).  A program of its own so that they link the engine
 * and the format code, never libfuse: they must run where FUSE is missing
 * or broken, on a copy of BACKING, in a rescue shell.
 */
#include "admin/admin.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "fsck") == 0)
		return sq_admin_fsck(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "export") == 0)
		return sq_admin_export(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "import") == 0)
		return sq_admin_import(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "stats") == 0)
		return sq_admin_stats(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "settle") == 0)
		return sq_admin_settle(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "recompress") == 0)
		return sq_admin_recompress(argc - 1, argv + 1);
	fprintf(stderr, "usage: squeezefs fsck [--repair] [--reclaim] BACKING\n"
		"       squeezefs export [--progress|--no-progress] BACKING "
		"DEST\n"
		"       squeezefs import [--all] [--policy fast|balanced|max] "
		"[--progress|--no-progress] BACKING\n"
		"       squeezefs stats [--json] [--bytes] PATH...\n"
		"       squeezefs settle PATH...\n"
		"       squeezefs recompress --codec CODEC[:LEVEL] PATH...\n");
	return 2;
}
