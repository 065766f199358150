/*
 * criterion shim: cr_log and cr_log_info/warn/error live in criterion.h,
 * which the real criterion.h also pulls logging.h into.
 */
#include <criterion/criterion.h>
