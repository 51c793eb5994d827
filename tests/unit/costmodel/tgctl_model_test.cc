#include "coordinator/costmodel/tgctl_model.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "coordinator/costmodel/synthetic.h"
#include "coordinator/costmodel/trace.h"

namespace tokengate::costmodel {
namespace {

int runTgctl(std::vector<std::string> args) {
  CLI::App app{"tgctl"};
  app.require_subcommand(1);
  app.add_subcommand("leibniz", "another tgctl command");
  addModelCommands(app);
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return runModelCommands(app);
}

TEST(TgctlModel, TrainThenShow) {
  const auto dir = std::filesystem::temp_directory_path() / "tg_tgctl_model";
  std::filesystem::create_directories(dir);
  const std::string trace = (dir / "trace.csv").string();
  const std::string model = (dir / "model.json").string();
  SyntheticWorkload w;
  ASSERT_TRUE(writeTraceCsv(trace, w.samples(1500)).ok());

  EXPECT_EQ(runTgctl({"model", "train", "--trace", trace, "--out", model, "--rounds", "10"}), 0);
  ASSERT_TRUE(std::filesystem::exists(model));
  EXPECT_EQ(runTgctl({"model", "show", model}), 0);
  EXPECT_EQ(runTgctl({"model", "show", (dir / "missing.json").string()}), 1);
  EXPECT_EQ(runTgctl({"model", "train", "--trace", (dir / "nope.csv").string()}), 1);
  // Not a model command: tgctl handles it.
  EXPECT_EQ(runTgctl({"leibniz"}), -1);
}

}  // namespace
}  // namespace tokengate::costmodel
