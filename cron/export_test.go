package cron

import "context"

// FireListedBefore is Fire with between run after it lists the declarations and before
// it fires them, so that a test can change the declarations in that window.
func (c *Cron) FireListedBefore(ctx context.Context, between func()) (fired int, err error) {
	listed := c.declared(OncePerTick)
	between()
	fired, _, err = c.fireListed(ctx, listed)
	return fired, err
}
