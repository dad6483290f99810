/* An engine built for another version of the engine interface: the worker must refuse it. */
#include "../worker/engine.h"

static const struct engine old = { .abi_version = ENGINE_ABI_VERSION - 1, .name = "old" };

__attribute__((visibility("default"))) const struct engine *modeld_engine(void);
const struct engine *modeld_engine(void)
{
	return &old;
}
