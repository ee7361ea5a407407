// Command composecheck loads Compose files the way `docker compose config` does (compose-go, the
// loader docker compose itself uses): interpolation of ${VARS} from the environment and the env
// files, validation against the Compose Specification schema, then the semantic checks
// (depends_on targets, volumes and networks declared, ...). It prints the normalized project as
// JSON and exits 0, or prints the loader's message and exits 1.
//
//	go build -o /tmp/composecheck . && /tmp/composecheck -f ../../compose.yaml --env-file ../../docker/env.example
//
// Flags:
//
//	-f FILE         a Compose file; repeat to merge several (default: compose.yaml & co. in the
//	                working directory, like docker compose)
//	--env-file FILE an env file for interpolation; repeatable. Default, like docker compose: the
//	                .env beside the first Compose file, if there is one. Variables of the
//	                process environment win over the env files.
//	-q              print nothing on success
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("composecheck", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var files, envFiles repeated
	flags.Var(&files, "f", "Compose file (repeatable)")
	flags.Var(&envFiles, "env-file", "env file for interpolation (repeatable)")
	quiet := flags.Bool("q", false, "print nothing on success")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "composecheck: unexpected arguments %q (use -f FILE)\n", flags.Args())
		return 2
	}

	// The same option chain as docker compose's ToProjectOptions: the project directory is the
	// first file's directory, OS variables take precedence over the env files.
	opts, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(""),
		cli.WithOsEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !*quiet {
		stdout.Write(out)
		fmt.Fprintln(stdout)
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
