// `tgctl journal check FILE`: reads a coordinator journal without changing it (no lock taken)
// and reports its records, live jobs, epoch and damage. Exit code 0 = clean, 1 = damaged (what a
// coordinator would skip or cut), 2 = unreadable or unparseable (a coordinator refuses it).
#pragma once

#include <CLI/CLI.hpp>

namespace tokengate::cli {

void addJournalCommands(CLI::App& app);
// The exit code, or -1 when no journal command was given.
int runJournalCommands(const CLI::App& app);

}  // namespace tokengate::cli
