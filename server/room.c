/* room — being written */
typedef int parley_room_placeholder;
