// Package codecheck holds tests that read the module's own source for mistakes the compiler
// and go vet let through. It has no code of its own.
package codecheck
