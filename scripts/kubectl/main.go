// kubectl, built from its published Go modules: the deploy/k8s test renders the
// manifests with it when the machine has no kubectl of Kubernetes 1.29 or later
// (scripts/setup.sh --tests builds it into stompede's cache).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
