// composeconfig prints a compose file's effective configuration as JSON, as
// `docker compose config --format json` does, using the same library (compose-go), for
// machines without Docker: interpolation from the environment, anchors and merges, every
// profile enabled. Usage, in this folder: go run . ../../docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composeconfig COMPOSE_FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions([]string{os.Args[1]},
		cli.WithOsEnv, cli.WithProfiles([]string{"*"}), cli.WithName("logowatch"))
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "composeconfig:", err)
	os.Exit(1)
}
