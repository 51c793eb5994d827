// `tgctl model ...` subcommands, kept next to the library they drive so tgctl only needs two
// calls (cli/tgctl.cc):
//   tgctl model train --trace FILE [--out model.json] [--rounds N] [--depth D]
//                     [--objective reg:squarederror|reg:pseudohubererror] [--threads N]
//   tgctl model show [MODEL]            (default model.json)
#pragma once

#include <CLI/CLI.hpp>

namespace tokengate::costmodel {

// Registers the `model` subcommand (with `train` and `show`) on tgctl's app.
void addModelCommands(CLI::App& app);

// After parsing: runs the selected model command and returns its exit code, or -1 if the
// command line did not select `model` (tgctl then handles it).
int runModelCommands(CLI::App& app);

}  // namespace tokengate::costmodel
