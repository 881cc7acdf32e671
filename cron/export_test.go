package cron

import "context"

// FireListedBefore is Fire with between run after it lists the declarations and before
// it fires them, so that a test can change the declarations in that window.
func (c *Cron) FireListedBefore(ctx context.Context, between func()) (fired int, err error) {
	listed := c.declared(OncePerTick)
	between()
	for _, sc := range listed {
		n, _, err := c.fireOne(ctx, sc)
		if err != nil {
			return fired, err
		}
		fired += n
	}
	return fired, nil
}
